package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
)

// dashboardPath is the Grafana dashboard shipped for operators.
const dashboardPath = "../../docs/grafana/sidecar-cluster.json"

// grafanaPanel is what the test reads of a panel of the dashboard JSON
// model. A collapsed row holds its panels in Panels.
type grafanaPanel struct {
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"` // a string, or {"query": ...}
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardQuery is one PromQL expression of the dashboard and where it is.
type dashboardQuery struct{ where, expr string }

// corePanels are the panel types Grafana ships; anything else is a plugin
// an operator would have to install.
var corePanels = []string{"row", "timeseries", "stat", "gauge", "bargauge", "table", "text",
	"state-timeline", "status-history", "heatmap", "histogram", "piechart", "barchart"}

// promDatasource is how every panel and query names the data source: the
// dashboard's datasource variable.
const promDatasource = `{"type":"prometheus","uid":"${datasource}"}`

func loadDashboard(t *testing.T) (grafanaDashboard, []dashboardQuery) {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var queries []dashboardQuery
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Title == "" {
				t.Errorf("a %s panel has no title", p.Type)
			}
			if !slices.Contains(corePanels, p.Type) {
				t.Errorf("panel %q: type %q is not a panel Grafana ships", p.Title, p.Type)
			}
			if p.Type != "row" {
				if !sameJSON(p.Datasource, promDatasource) {
					t.Errorf("panel %q: datasource %s, want %s", p.Title, p.Datasource, promDatasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q: a target has no expr", p.Title)
				}
				if len(tg.Datasource) > 0 && !sameJSON(tg.Datasource, promDatasource) {
					t.Errorf("panel %q: target datasource %s, want %s", p.Title, tg.Datasource, promDatasource)
				}
				queries = append(queries, dashboardQuery{"panel " + p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
			q = obj.Query
		}
		if !sameJSON(v.Datasource, promDatasource) {
			t.Errorf("variable %s: datasource %s, want %s", v.Name, v.Datasource, promDatasource)
		}
		queries = append(queries, dashboardQuery{"variable " + v.Name, q})
	}
	return d, queries
}

func sameJSON(a json.RawMessage, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// promqlKeywords are PromQL words that are not metric names when not
// followed by "(": binary operators, modifiers, and the aggregations,
// which may be followed by a grouping (sum by (le) (...)).
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true,
	"offset": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true}

// promqlGrouping are the words followed by a list of label names.
var promqlGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

// promqlMetricNames returns the metric names expr selects: the identifiers
// that are not a function or aggregation (followed by "("), not a keyword,
// and not inside a label matcher {...}, a range [...], a grouping list
// by (...) or a string. Grafana variables ($x, ${x}) are skipped. A label
// name given to a function as an argument (label_values(m, instance)) is
// returned too: callers keep the names of the metrics they know by prefix.
func promqlMetricNames(expr string) []string {
	var names []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	// skipString returns the index after the string whose quote is at i.
	skipString := func(i int) int {
		q := expr[i]
		for i++; i < len(expr) && expr[i] != q; i++ {
			if expr[i] == '\\' && q != '`' {
				i++
			}
		}
		return i + 1
	}
	// skipTo returns the index after the close that ends what opens at i,
	// skipping strings.
	skipTo := func(i int, close byte) int {
		for i++; i < len(expr) && expr[i] != close; {
			if q := expr[i]; q == '"' || q == '\'' || q == '`' {
				i = skipString(i)
			} else {
				i++
			}
		}
		return i + 1
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(i)
		case c == '{':
			i = skipTo(i, '}')
		case c == '[':
			i = skipTo(i, ']')
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				i = skipTo(i, '}')
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++ // 0.99, 1e3, 0x1f, 5m
			}
		case isStart(c):
			j := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[j:i]
			k := i
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\t' || expr[k] == '\n') {
				k++
			}
			call := k < len(expr) && expr[k] == '('
			switch lower := strings.ToLower(word); {
			case promqlGrouping[lower]:
				if call {
					i = skipTo(k, ')')
				}
			case call, promqlKeywords[lower]:
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names
}

func TestPromQLMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`sidecar_connections{instance=~"$instance"}`, []string{"sidecar_connections"}},
		{`sum by (instance) (rate(sidecar_deliveries_total{instance=~"$instance"}[$__rate_interval]))`, []string{"sidecar_deliveries_total"}},
		{`histogram_quantile(0.99, sum by (instance, le) (rate(sidecar_broker_latency_seconds_bucket{a="}[x"}[5m])))`,
			[]string{"sidecar_broker_latency_seconds_bucket"}},
		{`count(sidecar_broker_up) - sum without (job) (sidecar_broker_up offset 5m)`, []string{"sidecar_broker_up", "sidecar_broker_up"}},
		{`a / on (instance) group_left (version) b > bool 1e3`, []string{"a", "b"}},
		{`time() - sidecar_rules_last_reload_success_timestamp_seconds`, []string{"sidecar_rules_last_reload_success_timestamp_seconds"}},
		{`label_values(sidecar_connections, instance)`, []string{"sidecar_connections", "instance"}},
		{`{__name__="x"} or ${var}`, nil},
	} {
		if got := promqlMetricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("promqlMetricNames(%s) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// exposedFamilies reads the text exposition at url: each family's name and
// type, from its "# TYPE" line (client_golang writes one for every family
// that has a sample).
func exposedFamilies(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("%s: Content-Type %q, want the text format", url, ct)
	}
	families := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return families
}

// exposed reports whether the metric name a query selects is in families:
// a family itself, or a histogram's (or summary's) _bucket, _sum, _count.
func exposed(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok {
			if typ := families[base]; typ == "histogram" || typ == "summary" && s != "_bucket" {
				return true
			}
		}
	}
	return false
}

func TestExposedHistogramSuffixes(t *testing.T) {
	families := map[string]string{"h_seconds": "histogram", "s_seconds": "summary", "c_total": "counter"}
	for name, want := range map[string]bool{
		"h_seconds": true, "h_seconds_bucket": true, "h_seconds_sum": true, "h_seconds_count": true,
		"s_seconds_sum": true, "s_seconds_count": true, "s_seconds_bucket": false,
		"c_total": true, "c_total_count": false, "c": false, "x_bucket": false,
	} {
		if got := exposed(families, name); got != want {
			t.Errorf("exposed(%s) = %v, want %v", name, got, want)
		}
	}
}

// dashboardRequired are metrics the dashboard must query, and the labels it
// must break them down by: what an operator of a cluster looks at.
var dashboardRequired = map[string][]string{
	"sidecar_connections":                   nil,
	"sidecar_users":                         nil,
	"sidecar_connections_accepted_total":    {"instance"},
	"sidecar_connections_refused_total":     {"instance"},
	"sidecar_auth_failures_total":           {"instance"},
	"sidecar_deliveries_total":              {"instance"},
	"sidecar_bytes_written_total":           {"instance"},
	"sidecar_events_published_total":        {"instance"},
	"sidecar_slow_consumers_total":          {"instance"},
	"sidecar_client_rate_limited_total":     {"instance"},
	"sidecar_connections_closed_total":      {"code"},
	"sidecar_webhooks_total":                {"status"},
	"sidecar_rule_errors_total":             {"rule", "kind"},
	"sidecar_rules_reload_failures_total":   {"instance"},
	"sidecar_rules_last_reload_success":     nil,
	"sidecar_forward_pending":               nil,
	"sidecar_forward_pending_bytes":         nil,
	"sidecar_presence_transitions_total":    {"state"},
	"sidecar_broker_up":                     nil,
	"sidecar_broker_published_total":        {"kind"},
	"sidecar_broker_received_total":         {"instance"},
	"sidecar_broker_dropped_total":          {"reason"},
	"sidecar_broker_errors_total":           {"instance"},
	"sidecar_broker_reconnects_total":       {"instance"},
	"sidecar_broker_latency_seconds_bucket": {"instance", "le"},
	"sidecar_cluster_nodes":                 nil,
	"process_resident_memory_bytes":         nil,
	"go_goroutines":                         nil,
}

var byList = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)

// TestDashboardQueriesExposedMetrics checks the shipped Grafana dashboard
// against a running node: every metric it queries is in /metrics, and it
// has the panels an operator needs.
func TestDashboardQueriesExposedMetrics(t *testing.T) {
	d, queries := loadDashboard(t)
	if d.SchemaVersion < 38 {
		t.Errorf("schemaVersion %d, want a Grafana 10+ model (38 or later)", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable: %v", vars)
	}
	if !slices.Contains(queries, dashboardQuery{"variable instance", "label_values(sidecar_connections, instance)"}) {
		t.Errorf("no instance variable of label_values(sidecar_connections, instance)")
	}

	// Which metrics the dashboard queries, where, and by which labels.
	queried := map[string][]string{} // name -> where
	grouped := map[string][]string{} // name -> labels of its by (...) lists
	for _, q := range queries {
		var labels []string
		for _, m := range byList.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				labels = append(labels, strings.TrimSpace(l))
			}
		}
		for _, n := range promqlMetricNames(q.expr) {
			if strings.HasPrefix(n, "sidecar_") || strings.HasPrefix(n, "process_") || strings.HasPrefix(n, "go_") {
				queried[n] = append(queried[n], q.where)
				grouped[n] = append(grouped[n], labels...)
			}
		}
	}
	for name, labels := range dashboardRequired {
		if queried[name] == nil {
			t.Errorf("the dashboard does not query %s", name)
			continue
		}
		for _, l := range labels {
			if !slices.Contains(grouped[name], l) {
				t.Errorf("the dashboard does not show %s by %s", name, l)
			}
		}
	}

	// A node, and what makes its labelled families appear: a vector has no
	// series, and no "# TYPE" line, until a label value is counted.
	rulesYAML := "rules:\n  - name: needs-user\n    on: fail\n    emit: {event: x, to: 'user(data.missing)'}\n"
	addr, cfg, _ := serveWith(t, rulesYAML, "")
	tok, _ := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
	conn, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+tok)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close() // a close (code 0) and a presence transition (online)
	if status, resp := signedPost(t, addr, "msg_dash", `{"type":"fail","data":{}}`); status != http.StatusAccepted {
		t.Fatalf("webhook = %d %v", status, resp) // a webhook answered 202, and a rule error
	}
	driven := []string{"sidecar_connections_closed_total", "sidecar_presence_transitions_total",
		"sidecar_webhooks_total", "sidecar_rule_errors_total"}
	var families map[string]string
	for deadline := time.Now().Add(3 * time.Second); ; {
		families = exposedFamilies(t, "http://"+addr+"/metrics")
		if !slices.ContainsFunc(driven, func(n string) bool { return !exposed(families, n) }) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	var missing []string
	for name, where := range queried {
		if !exposed(families, name) {
			slices.Sort(where)
			missing = append(missing, name+" ("+strings.Join(slices.Compact(where), "; ")+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s queries %d metrics that /metrics does not expose:\n  %s",
			dashboardPath, len(missing), strings.Join(missing, "\n  "))
	}
}
