package rules

import (
	"context"
	"net/url"

	"go.yaml.in/yaml/v3"
)

// forward posts the event to the app: {url, data}. url is a literal
// (usually "${APP_URL}/..."), checked at load; data, an optional
// expression, shapes the body. Without it the engine sends the input event.
type forward struct {
	url  string
	data *Expr
}

var _ Action = (*forward)(nil)

func newForward(node *yaml.Node, c *Compiler) (Action, error) {
	m, err := c.Mapping("forward", node, "url", "data")
	if err != nil {
		return nil, err
	}
	f := &forward{}
	var errs ErrorList
	if m["url"] == nil {
		errs = append(errs, c.Errorf(node, "forward: missing url"))
	} else if f.url, err = c.String("forward.url", m["url"]); err != nil {
		errs = append(errs, c.errorsOf(err, "forward.url", m["url"])...)
	} else if u, err := url.Parse(f.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, c.Errorf(m["url"], "forward.url: %q is not an absolute http(s) URL", f.url))
	}
	if m["data"] != nil {
		if f.data, err = c.Expr("forward.data", m["data"]); err != nil {
			errs = append(errs, c.errorsOf(err, "forward.data", m["data"])...)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return f, nil
}

func (f *forward) Do(_ context.Context, in *Input, out []Output) ([]Output, error) {
	var data any
	if f.data != nil {
		var err error
		if data, err = in.Eval(f.data); err != nil {
			return out, err
		}
	}
	return append(out, Output{Action: "forward", URL: f.url, Data: data}), nil
}
