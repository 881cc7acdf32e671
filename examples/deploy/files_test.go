package deploy_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func readDocs(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := parseYAML(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return docs
}

// str returns the scalar at path in v, failing t if there is none.
func str(t *testing.T, v any, path ...string) string {
	t.Helper()
	got, ok := at(v, path...)
	s, isStr := got.(string)
	if !ok || !isStr {
		t.Fatalf("no scalar at %s", strings.Join(path, "."))
	}
	return s
}

func seconds(t *testing.T, s string) int {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%q is neither seconds nor a duration", s)
	}
	return int(d / time.Second)
}

// TestKubernetesManifest checks what kubernetes.yaml promises: three replicas, liveness on
// /livez and readiness on /readyz, the DSN from a Secret, a preStop pause, and a grace
// period that covers the pause, the app's delay and its timeout; a Service and a
// PodDisruptionBudget that select the pods.
func TestKubernetesManifest(t *testing.T) {
	docs := readDocs(t, "kubernetes.yaml")
	byKind := map[string]any{}
	for _, d := range docs {
		byKind[str(t, d, "kind")] = d
	}
	dep, svc, pdb := byKind["Deployment"], byKind["Service"], byKind["PodDisruptionBudget"]
	if dep == nil || svc == nil || pdb == nil {
		t.Fatalf("want a Deployment, a Service and a PodDisruptionBudget; found %v", keys(byKind))
	}
	if got := str(t, dep, "spec", "replicas"); got != "3" {
		t.Errorf("replicas = %s, want 3", got)
	}
	if got := str(t, dep, "spec", "strategy", "rollingUpdate", "maxUnavailable"); got != "0" {
		t.Errorf("maxUnavailable = %s, want 0", got)
	}
	label := str(t, dep, "spec", "selector", "matchLabels", "app")
	if got := str(t, dep, "spec", "template", "metadata", "labels", "app"); got != label {
		t.Errorf("the pods are labelled %q, the Deployment selects %q", got, label)
	}
	if got := str(t, svc, "spec", "selector", "app"); got != label {
		t.Errorf("the Service selects %q, want %q", got, label)
	}
	if got := str(t, pdb, "spec", "selector", "matchLabels", "app"); got != label {
		t.Errorf("the PodDisruptionBudget selects %q, want %q", got, label)
	}

	c := []string{"spec", "template", "spec", "containers", "[0]"}
	in := func(path ...string) []string { return append(append([]string{}, c...), path...) }
	if got := str(t, dep, in("livenessProbe", "httpGet", "path")...); got != "/livez" {
		t.Errorf("liveness probes %s, want /livez (never the database)", got)
	}
	if got := str(t, dep, in("readinessProbe", "httpGet", "path")...); got != "/readyz" {
		t.Errorf("readiness probes %s, want /readyz", got)
	}
	env := map[string]any{}
	list, _ := at(dep, in("env")...)
	items, _ := list.([]any)
	for _, e := range items {
		env[str(t, e, "name")] = e
	}
	if _, ok := at(env["TWICE_DSN"], "valueFrom", "secretKeyRef", "name"); !ok {
		t.Error("TWICE_DSN does not come from a Secret")
	}
	if got := str(t, dep, in("ports", "[0]", "containerPort")...); got != str(t, env["PORT"], "value") {
		t.Errorf("the container port %s is not PORT %s", got, str(t, env["PORT"], "value"))
	}
	pause := seconds(t, str(t, dep, in("lifecycle", "preStop", "sleep", "seconds")...))
	delay := seconds(t, str(t, env["SHUTDOWN_DELAY"], "value"))
	timeout := seconds(t, str(t, env["SHUTDOWN_TIMEOUT"], "value"))
	grace := seconds(t, str(t, dep, "spec", "template", "spec", "terminationGracePeriodSeconds"))
	if pause <= 0 || grace <= pause+delay+timeout {
		t.Errorf("terminationGracePeriodSeconds %d must exceed the preStop pause %d + SHUTDOWN_DELAY %d + SHUTDOWN_TIMEOUT %d",
			grace, pause, delay, timeout)
	}
}

// TestComposeFile checks compose.yaml: PostgreSQL, three instances and the proxy, which is
// the only service that publishes ports; the proxy's APP addresses name the instances on
// their PORT; every instance's stop grace covers its shutdown. With docker compose
// installed, `docker compose config` checks the file too.
func TestComposeFile(t *testing.T) {
	docs := readDocs(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("%d documents, want 1", len(docs))
	}
	services, _ := at(docs[0], "services")
	m, _ := services.(map[string]any)
	for _, name := range []string{"db", "app1", "app2", "app3", "proxy"} {
		if m[name] == nil {
			t.Fatalf("no service %s", name)
		}
	}
	for name, s := range m {
		if _, published := at(s, "ports"); published != (name == "proxy") {
			t.Errorf("service %s publishes ports: %v (only the proxy may)", name, published)
		}
	}
	for i := 1; i <= 3; i++ {
		app := "app" + strconv.Itoa(i)
		if got, want := str(t, m["proxy"], "environment", "APP"+strconv.Itoa(i)), app+":"+str(t, m[app], "environment", "PORT"); got != want {
			t.Errorf("the proxy's APP%d = %q, want %q", i, got, want)
		}
		if !strings.Contains(str(t, m[app], "environment", "TWICE_DSN"), "@db:") {
			t.Errorf("%s's TWICE_DSN does not point at the db service", app)
		}
		if got := str(t, m[app], "hostname"); got != app {
			t.Errorf("%s's hostname (its name in responses) = %q", app, got)
		}
		grace := seconds(t, str(t, m[app], "stop_grace_period"))
		delay := seconds(t, str(t, m[app], "environment", "SHUTDOWN_DELAY"))
		timeout := seconds(t, str(t, m[app], "environment", "SHUTDOWN_TIMEOUT"))
		if grace <= delay+timeout {
			t.Errorf("%s: stop_grace_period %ds must exceed SHUTDOWN_DELAY %ds + SHUTDOWN_TIMEOUT %ds", app, grace, delay, timeout)
		}
	}
	if got := str(t, m["proxy"], "volumes", "[0]"); !strings.HasPrefix(got, "./haproxy.cfg:") {
		t.Errorf("the proxy mounts %q, want ./haproxy.cfg", got)
	}

	if exec.Command("docker", "compose", "version").Run() != nil {
		t.Log("docker compose is not installed: checked the file's structure only")
		return
	}
	if out, err := exec.Command("docker", "compose", "-f", "compose.yaml", "config", "-q").CombinedOutput(); err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}

// TestHAProxyConfigValid has HAProxy check haproxy.cfg with and without the optional
// variables.
func TestHAProxyConfigValid(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (apt-get install haproxy): skipping the check of haproxy.cfg")
	}
	base := append(os.Environ(), "APP1=127.0.0.1:1", "APP2=127.0.0.1:2", "APP3=127.0.0.1:3")
	for _, extra := range [][]string{nil, {"LISTEN=127.0.0.1:1", "STATS=127.0.0.1:2", "CHECK_INTER=100ms", "CHECK_FAST=50ms"}} {
		cmd := exec.Command(haproxy, "-c", "-f", "haproxy.cfg")
		cmd.Env = append(base, extra...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("haproxy -c with %v: %v\n%s", extra, err, out)
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestParseYAML holds the small reader to the subset it claims, and to its errors.
func TestParseYAML(t *testing.T) {
	docs, err := parseYAML(`
base: &b
  a: "1"   # a comment
  list:
    - x
    - k: v
      n: '2'
top:
  <<: *b
  a: over
flow: ["p", q]
---
- one
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	for path, want := range map[string]string{
		"base.a": "1", "top.a": "over", "top.list.[1].n": "2", "top.list.[0]": "x", "flow.[0]": "p", "flow.[1]": "q",
	} {
		if got, _ := at(docs[0], strings.Split(path, ".")...); got != want {
			t.Errorf("%s = %v, want %q", path, got, want)
		}
	}
	for _, bad := range []string{"a:\n\tb: 1", "a: 1\n  b: 2", "a: 1\na: 2", "a: |\n  text", "a: *nowhere", "a: [1, 2"} {
		if _, err := parseYAML(bad); err == nil {
			t.Errorf("parseYAML(%q) accepted it", bad)
		}
	}
}
