package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/internal/cli"
)

// newHealthcheckCmd is the container healthcheck: an image built FROM
// scratch has no curl or shell, so the binary probes its own node.
func newHealthcheckCmd(opts *cli.GlobalOptions) *cobra.Command {
	var rawURL string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if a node's health URL answers 200, else 1 (for container healthchecks)",
		Long: `Send one GET to --url and exit 0 if it answers 200 within --timeout, 1 otherwise
(connection refused, timeout, any other status). Meant as the HEALTHCHECK of the
FROM scratch image, which has no curl or shell. /readyz is 200 once the node
can route requests; /healthz once the process serves.`,
		Example: `  cairn healthcheck --url http://127.0.0.1:7070/readyz --timeout 2s`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return cli.Usage(err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(rawURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return cli.UsageErrorf("--url %q must be an absolute http(s) URL", rawURL)
			}
			if opts.Timeout <= 0 {
				return cli.UsageErrorf("--timeout must be positive")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
			status, err := probe(ctx, u.String())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), status)
			return nil
		},
	}
	cmd.Flags().StringVar(&rawURL, "url", "http://127.0.0.1:7070/readyz", "URL to probe")
	return cmd
}

// probe GETs u once. Its errors never wrap the context's, so cli.ExitCode maps
// every failure to 1, the one unhealthy status a container runtime knows.
func probe(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("unhealthy: %v", err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("unhealthy: no answer from %s in time", u)
		}
		return "", fmt.Errorf("unhealthy: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("unhealthy: %s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return "healthy: " + resp.Status, nil
}
