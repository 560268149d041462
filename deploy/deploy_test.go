package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need finds a tool, skipping the test without it, except under CI=true
// where .ci/run installs it and a missing one is a failure.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true (apt-get install %s): %v", tool, pkg, err)
	}
	t.Skipf("skipping: no %s (apt-get install %s)", tool, pkg)
	return ""
}

// The unit file parses, every directive is known to this systemd, and the
// hardening it promises is there.
func TestSystemdUnit(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile(filepath.Join("systemd", "presenced.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "EnvironmentFile=/etc/presenced/presenced.env", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID", "TimeoutStopSec=20s"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// verify needs an executable ExecStart and an environment file that
	// exists: point them at this test binary and an optional file.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	u := strings.Replace(string(unit), "ExecStart=/usr/local/bin/presenced", "ExecStart="+self, 1)
	u = strings.Replace(u, "EnvironmentFile=/etc/presenced/presenced.env", "EnvironmentFile=-/etc/presenced/presenced.env", 1)
	path := filepath.Join(t.TempDir(), "presenced.service")
	if err := os.WriteFile(path, []byte(u), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	// Unknown or misspelt directives are only warnings: any output fails.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// finalStage is deploy/Dockerfile's last stage, its COPY --from=build
// lines turned into copies from a local context holding the same files:
// the base images of the build stage need a registry, the final stage
// (what runs in production) does not.
func finalStage(t *testing.T) string {
	t.Helper()
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(df)
	i := strings.LastIndex(s, "\nFROM ")
	if i < 0 {
		t.Fatal("no FROM in deploy/Dockerfile")
	}
	stage := s[i+1:]
	if !strings.HasPrefix(stage, "FROM scratch") && !strings.HasPrefix(stage, "FROM gcr.io/distroless/static") {
		t.Fatalf("final stage is not scratch or distroless static: %q", strings.SplitN(stage, "\n", 2)[0])
	}
	return strings.ReplaceAll(stage, "COPY --from=build /out/", "COPY ")
}

// The image: built from the Dockerfile's final stage with podman, it runs
// as 65532, serves /healthz and /readyz, prints --version, and refuses a
// short secret.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a container")
	}
	podman := need(t, "podman", "podman")
	ctx := t.TempDir()
	// The binary exactly as the build stage makes it.
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -X main.revision=image-test",
		"-o", filepath.Join(ctx, "presenced"), "../cmd/presenced")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(ctx, "etc", "ssl", "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("CA certificates (apt-get install ca-certificates): %v", err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "etc", "ssl", "certs", "ca-certificates.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(finalStage(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tag := "localhost/presenced-image-test:" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command(podman, "build", "--pull=never", "-t", tag, "-f", filepath.Join(ctx, "Containerfile"), ctx).CombinedOutput(); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(podman, "rmi", "-f", tag).Run() })

	// Config of the image as built.
	out, err := exec.Command(podman, "image", "inspect", "--format", "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}", tag).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, `65532:65532|["/presenced"]|`) || !strings.Contains(got, "8080/tcp") {
		t.Fatalf("image config %s: want user 65532:65532, entrypoint /presenced, port 8080", got)
	}

	run := runArgs(podman)
	out, err = exec.Command(podman, append(append([]string{"run", "--rm"}, run...), tag, "--version")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "presenced (devel) revision image-test") {
		t.Fatalf("--version in the container: %v\n%s", err, out)
	}
	out, err = exec.Command(podman, append(append([]string{"run", "--rm", "-e", "PRESENCE_SECRET=short"}, run...), tag)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "at least 32 bytes") {
		t.Fatalf("a short secret in the container: %v\n%s", err, out)
	}

	port := freePort(t)
	name := "presenced-image-test-" + hex.EncodeToString(rnd[:])
	args := append([]string{"run", "-d", "--name", name, "-p", fmt.Sprintf("127.0.0.1:%d:8080", port),
		"-e", "PRESENCE_SECRET=image-test-secret-image-test-secret-0123"}, run...)
	if out, err := exec.Command(podman, append(args, tag)...).CombinedOutput(); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command(podman, "logs", name).CombinedOutput()
			t.Logf("container log:\n%s", logs)
		}
		_ = exec.Command(podman, "rm", "-f", "-t", "5", name).Run()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, path := range []string{"/healthz", "/readyz"} {
		waitOK(t, base+path)
	}
	out, err = exec.Command(podman, "top", name, "user", "args").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "65532") || !strings.Contains(string(out), "/presenced") {
		t.Fatalf("the gateway does not run as 65532 (%v):\n%s", err, out)
	}
	// SIGTERM (podman stop) ends it cleanly.
	if out, err := exec.Command(podman, "stop", "-t", "15", name).CombinedOutput(); err != nil {
		t.Fatalf("podman stop: %v\n%s", err, out)
	}
	out, _ = exec.Command(podman, "inspect", "--format", "{{.State.ExitCode}}", name).CombinedOutput()
	if strings.TrimSpace(string(out)) != "0" {
		logs, _ := exec.Command(podman, "logs", name).CombinedOutput()
		t.Fatalf("exit code after SIGTERM %q, want 0\n%s", out, logs)
	}
}

// runArgs works around this kind of machine (seen on the project's CI
// VM): crun refuses hybrid cgroups ("cgroups in hybrid mode not
// supported"), so runc is used when installed; and without
// CAP_SYS_RESOURCE the OCI runtime cannot raise RLIMIT_NOFILE/NPROC to
// podman's defaults ("setrlimit RLIMIT_NOFILE: Operation not permitted"),
// so the container gets lower limits, which anyone may set.
func runArgs(podman string) []string {
	var args []string
	if _, err := exec.LookPath("runc"); err == nil {
		args = append(args, "--runtime", "runc")
	}
	return append(args, "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%d %s", res.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
