package run

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// The test binary is also the instance the tests run: with envChild set, TestMain serves
// instead of testing.
const (
	envChild = "TWICE_RUN_TEST_CHILD" // "serve", or "stubborn": ignores SIGTERM and has a child of its own
	envDir   = "TWICE_RUN_TEST_DIR"   // where the test and its instances leave files for each other
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(child(mode))
	}
	goleak.VerifyTestMain(m) // every goroutine of a runner ends with it
}

// child is the tiny test server:
//   - /readyz answers 503 while the file sick-N exists in $TWICE_RUN_TEST_DIR, 200 otherwise;
//   - / answers its $TWICE_INSTANCE;
//   - /ws echoes WebSocket messages, prefixed with its $TWICE_INSTANCE;
//   - /db connects to $TWICE_DSN (PostgreSQL) and answers 200 once it pinged it;
//   - /deaf closes its listener, so it no longer takes connections yet keeps running.
//
// In mode "stubborn" it ignores SIGTERM and starts a grandchild (sleep), whose pid it writes
// to the file grandchild-N.
func child(mode string) int {
	inst, dir := os.Getenv(EnvInstance), os.Getenv(envDir)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
		ctx = context.Background()
		sleep := exec.Command("sleep", "600")
		if err := sleep.Start(); err != nil {
			fmt.Println("no grandchild:", err)
			return 1
		}
		os.WriteFile(filepath.Join(dir, "grandchild-"+inst), []byte(strconv.Itoa(sleep.Process.Pid)), 0o644)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv(EnvPort))
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := os.Stat(filepath.Join(dir, "sick-"+inst)); err == nil {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, inst) })
	mux.HandleFunc("/deaf", func(w http.ResponseWriter, _ *http.Request) {
		ln.Close()
		fmt.Fprint(w, "deaf")
	})
	mux.HandleFunc("/db", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, os.Getenv(EnvDSN))
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
		}
		if err != nil {
			http.Error(w, "no database", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte(inst+":"), msg...)); err != nil {
				return
			}
		}
	})
	srv := &http.Server{Handler: mux}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	fmt.Printf("instance %s listening on %s\n", inst, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		fmt.Println("serve:", err)
		return 1
	}
	<-ctx.Done() // when deaf, keep running, as a process that lost its listener would
	fmt.Println("stopped on SIGTERM")
	return 0
}
