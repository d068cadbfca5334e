// Package chaos is cairn's chaos suite: it drives the docker-compose cluster
// (docker-compose.yml) from the host through the HTTP API while it kills,
// pauses, disconnects and restarts the node containers, and checks what the
// clients saw (Scenarios S1, S3, S5, S22, S25). Besides single faults and
// combinations, the nemesis (nemesis.go) hands leadership to a node and
// pauses it (transfer-pause), kills every node at once (kill-all) and
// restarts a node in the middle of a replica move (restart-mid-move).
//
// TestChaos needs the cluster running and CAIRN_CHAOS_DOCKER=1; "make
// test-chaos" provides both. Without them it skips. The nemesis's own tests
// (nemesis_test.go) run against fake containers and always run.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// dockerTimeout bounds one docker command. docker stop waits up to the grace
// period before it kills, so it needs more than the rest.
const dockerTimeout = 60 * time.Second

// Containers is what the nemesis does to the node containers. Docker does
// it with the docker CLI; the suite's own tests use a fake.
type Containers interface {
	Kill(ctx context.Context, container string) error
	Start(ctx context.Context, container string) error
	Restart(ctx context.Context, container string, grace time.Duration) error
	Pause(ctx context.Context, container string) error
	Unpause(ctx context.Context, container string) error
	Disconnect(ctx context.Context, network, container string) error
	Connect(ctx context.Context, network, container, ip string, aliases []string) error
	Inspect(ctx context.Context, container string) (*ContainerState, error)
}

var _ Containers = Docker{}

// Docker runs docker CLI commands against the node containers. It only ever
// names the containers and the network it was given.
type Docker struct{}

func (Docker) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Available reports whether a docker daemon answers.
func (d Docker) Available(ctx context.Context) error {
	_, err := d.run(ctx, "info", "--format", "{{.ServerVersion}}")
	return err
}

// Kill sends SIGKILL to the container: the node dies without a goodbye.
func (d Docker) Kill(ctx context.Context, container string) error {
	_, err := d.run(ctx, "kill", container)
	return err
}

// Start starts a stopped container.
func (d Docker) Start(ctx context.Context, container string) error {
	_, err := d.run(ctx, "start", container)
	return err
}

// Restart stops the container gracefully (SIGTERM, SIGKILL after grace) and
// starts it again.
func (d Docker) Restart(ctx context.Context, container string, grace time.Duration) error {
	_, err := d.run(ctx, "restart", "-t", fmt.Sprint(int(grace.Seconds())), container)
	return err
}

// Pause freezes every process of the container (cgroup freezer); its sockets
// stay open, so peers see a node that accepts connections and never answers.
func (d Docker) Pause(ctx context.Context, container string) error {
	_, err := d.run(ctx, "pause", container)
	return err
}

// Unpause thaws a paused container.
func (d Docker) Unpause(ctx context.Context, container string) error {
	_, err := d.run(ctx, "unpause", container)
	return err
}

// Disconnect removes the container from network: it can reach no peer and
// the host can no longer reach its published port.
func (d Docker) Disconnect(ctx context.Context, network, container string) error {
	_, err := d.run(ctx, "network", "disconnect", "--force", network, container)
	return err
}

// Connect attaches the container to network again with its fixed address and
// its aliases (the service name peers dial), which a plain connect would drop.
func (d Docker) Connect(ctx context.Context, network, container, ip string, aliases []string) error {
	args := []string{"network", "connect"}
	if ip != "" {
		args = append(args, "--ip", ip)
	}
	for _, a := range aliases {
		args = append(args, "--alias", a)
	}
	_, err := d.run(ctx, append(args, network, container)...)
	return err
}

// ContainerState is the part of docker inspect the suite reads.
type ContainerState struct {
	Running, Paused bool
	Networks        map[string]EndpointSettings
}

// EndpointSettings is one network attachment of a container.
type EndpointSettings struct {
	IPAMConfig *struct {
		IPv4Address string
	}
	Aliases   []string
	IPAddress string
}

// Inspect reads the container's run state and network attachments.
func (d Docker) Inspect(ctx context.Context, container string) (*ContainerState, error) {
	out, err := d.run(ctx, "inspect", "--type", "container", "--format",
		`{"Running":{{json .State.Running}},"Paused":{{json .State.Paused}},"Networks":{{json .NetworkSettings.Networks}}}`,
		container)
	if err != nil {
		return nil, err
	}
	var st ContainerState
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("docker inspect %s: %w", container, err)
	}
	return &st, nil
}

// HostPort returns the host address a container port is published on, such
// as "127.0.0.1:7080".
func (d Docker) HostPort(ctx context.Context, container, port string) (string, error) {
	out, err := d.run(ctx, "port", container, port)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "127.0.0.1:") {
			return line, nil
		}
	}
	return "", fmt.Errorf("docker port %s %s: not published on 127.0.0.1: %q", container, port, out)
}

// Logs returns the last lines of the container's output.
func (d Docker) Logs(ctx context.Context, container string, tail int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "logs", "--tail", fmt.Sprint(tail), container).CombinedOutput()
	return string(out), err
}
