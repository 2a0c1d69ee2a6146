package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/engine/auth"
)

// runToken mints a development JWT signed with auth.jwt_secret and prints
// it alone on stdout.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token")
	path := fs.String("config", "", "config file whose auth.jwt_secret signs the token")
	sub := fs.String("sub", "", "user id (the sub claim)")
	role := fs.String("role", "", "role claim, e.g. admin or provider")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	if ok, err := parseFlags(fs, args, stdout, stderr); !ok {
		return err
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "sidecar token: --sub is required")
		return errReported
	}
	cfg, _, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	now := time.Now()
	claims := map[string]any{"sub": *sub, "iat": now.Unix(), "exp": now.Add(*ttl).Unix()}
	if *role != "" {
		claims["role"] = *role
	}
	if cfg.Auth.Issuer != "" {
		claims["iss"] = cfg.Auth.Issuer
	}
	if cfg.Auth.Audience != "" {
		claims["aud"] = cfg.Auth.Audience
	}
	tok, err := auth.Sign([]byte(cfg.Auth.JWTSecret), claims)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
