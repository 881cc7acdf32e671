package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/forward"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/metrics"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

//go:embed migrations
var migrations embed.FS

//go:embed templates/*.html static/style.css static/chat.js
var assets embed.FS

// Component is the shop's schema: its own tables, migrated by twice's migrator under its
// migration lock, so three instances starting together apply it once.
func Component() (store.Component, error) {
	return store.LoadComponent("shop", migrations,
		store.Table{Name: "shop_products"}, store.Table{Name: "shop_orders"},
		store.Table{Name: "shop_reports"}, store.Table{Name: "shop_chat"}, store.Table{Name: "shop_sales"},
		store.Table{Name: "shop_payments"}, store.Table{Name: "shop_restocks"}, store.Table{Name: "shop_carts"})
}

// Configure sets, in the node's configuration before [twice.Open], what the shop needs of
// it: the realtime hub's connections are the session's user's (the hub's endpoint sits
// behind the session middleware), may follow only the support room, and keep a day of
// the room's history, so a chat page opened within a day resumes from its newest message.
func Configure(cfg *twice.Config) {
	cfg.Realtime.Authenticate = authenticate
	cfg.Realtime.Authorize = authorize
	cfg.Realtime.HistoryAge = 24 * time.Hour
}

// Names the shop gives twice's building blocks.
const (
	reportSchedule = "shop-report" // the cron schedule of the report, every minute
	reportEvery    = "* * * * *"
	catalogueCache = "shop-catalogue"
	catalogueKey   = "all" // the catalogue is one entry: four products
	supportRoom    = "support"
)

// Options configures [New].
type Options struct {
	// Slot is the instance's slot under `twice run` ($TWICE_INSTANCE), shown in the footer.
	// Defaults to "-".
	Slot string
	// ChatRoom is where the support chat's messages go. Defaults to a room stored in the
	// shop's table shop_chat and delivered by the node's realtime hub ([NewHubRoom]).
	ChatRoom Room
}

// Shop is the shop's HTTP handler on one node.
type Shop struct {
	node      *twice.Node
	slot      string
	log       *slog.Logger
	catalogue *cache.Cache[string, catalogue]
	room      Room
	fulfil    *workflow.Workflow[fulfilment]
	metrics   *metrics.Metrics
	carts     *carts
	cartFwd   *forward.Forwarder // sends cart requests to the cart's owner
	pages     map[string]*template.Template
	handler   http.Handler
}

// New migrates the shop's tables, registers its job workers, cron schedule, fulfilment
// workflow and sales consumer on node, joins the carts' partition set, and returns its
// handler. Open node with a configuration [Configure] has set, a ClusterSecret and an
// AdvertiseAddr (the cart's requests are forwarded between instances). Close the shop
// before the node.
func New(ctx context.Context, node *twice.Node, opts Options) (*Shop, error) {
	comp, err := Component()
	if err != nil {
		return nil, err
	}
	if _, err := store.NewMigrator(node.Store(), comp).Up(ctx); err != nil {
		return nil, fmt.Errorf("shop: migrations: %w", err)
	}
	s := &Shop{node: node, slot: opts.Slot, log: node.Logger(), room: opts.ChatRoom}
	if s.slot == "" {
		s.slot = "-"
	}
	if s.room == nil {
		s.room = NewHubRoom(node.Store(), node.Realtime(), s.slot+" "+node.ID())
	}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.catalogue, err = cache.New(node.Caches(), catalogueCache, cache.Config[string, catalogue]{Load: s.loadCatalogue})
	if err != nil {
		return nil, err
	}
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[confirmOrder](s.confirm)); err != nil {
		return nil, err
	}
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[report](s.makeReport)); err != nil {
		return nil, err
	}
	if err := node.Cron().Add(reportSchedule, reportEvery, report{}, &cron.Opts{CatchUp: cron.CatchUpSkip}); err != nil {
		return nil, err
	}
	if err := s.registerFulfilment(); err != nil {
		return nil, err
	}
	if err := s.countSales(ctx); err != nil {
		return nil, err
	}
	if s.metrics, err = metrics.New(node, metrics.Config{}); err != nil {
		return nil, err
	}
	if s.carts, err = joinCarts(ctx, node); err != nil {
		return nil, err
	}
	if s.cartFwd, err = s.cartForwarder(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP serves the shop.
func (s *Shop) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close closes the idle connections the shop forwards cart requests over. Closing the node
// hands the carts' partitions over.
func (s *Shop) Close() { s.cartFwd.Close() }

func (s *Shop) routes() http.Handler {
	pages := http.NewServeMux()
	pages.HandleFunc("GET /{$}", s.home)
	pages.HandleFunc("GET /login", s.loginPage)
	pages.HandleFunc("POST /login", s.login)
	pages.HandleFunc("POST /logout", s.logout)
	pages.HandleFunc("GET /catalogue", s.signedIn(s.cataloguePage))
	pages.HandleFunc("POST /orders", s.signedIn(s.placeOrder))
	pages.HandleFunc("GET /orders", s.signedIn(s.ordersPage))
	pages.HandleFunc("GET /orders/{id}", s.signedIn(s.orderPage))
	pages.Handle("POST /orders/{id}", s.signedIn(s.editOrder))
	pages.HandleFunc("GET /admin", s.signedIn(s.adminPage))
	pages.HandleFunc("POST /admin/products/{id}", s.signedIn(s.editPrice))
	pages.HandleFunc("POST /admin/banner", s.signedIn(s.setBanner))
	pages.HandleFunc("POST /admin/restock", s.signedIn(s.restockPage))
	pages.HandleFunc("GET /reports", s.signedIn(s.reportsPage))
	pages.HandleFunc("GET /chat", s.signedIn(s.chatPage))
	pages.HandleFunc("GET /chat/online", s.signedIn(s.chatOnline))
	pages.HandleFunc("POST /chat", s.signedIn(s.postChat))
	// The cart's pages are served by the instance owning the cart (cart.go).
	pages.HandleFunc("GET /cart", s.signedIn(s.atOwner(s.cartPage)))
	pages.HandleFunc("POST /cart/items", s.signedIn(s.atOwner(s.addToCart)))
	pages.HandleFunc("POST /cart/remove", s.signedIn(s.atOwner(s.removeFromCart)))
	pages.HandleFunc("POST /cart/checkout", s.signedIn(s.atOwner(s.checkout)))
	// The hub's WebSocket endpoint, behind the session middleware: Configure's
	// Authenticate reads the user from the session its cookie names.
	pages.Handle("GET /realtime", s.node.Realtime().Handler())

	mux := http.NewServeMux()
	health := s.node.Health()
	mux.Handle("GET /livez", health)
	mux.Handle("GET /readyz", health)
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.Handle("GET /realtime.js", s.node.Realtime().Script())
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	// The pages are counted by the pattern they matched (twice_http_requests_total).
	mux.Handle("/", s.node.Sessions().Middleware(s.metrics.Middleware(pages)))
	return s.served(mux)
}

// served names the instance on every response, for the footer's reader and for tools.
func (s *Shop) served(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", s.slot+" "+s.node.ID())
		next.ServeHTTP(w, r)
	})
}

// signedIn sends a visitor without a user to the login page.
func (s *Shop) signedIn(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if session.UserID(r.Context()) == "" {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h(w, r)
	}
}

// newKey is a fresh Idempotency-Key for a form: 128 random bits.
func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// page is what every template gets: its own data, and the footer's.
type page struct {
	Title    string
	User     string
	Slot     string
	Instance string
	Leader   bool
	Served   string
	Flash    string
	Banner   string // the setting shop.banner
	Data     any
}

// render writes the page name with data, the footer naming this instance.
func (s *Shop) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	t, ok := s.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	p := page{Title: title, User: session.UserID(r.Context()), Slot: s.slot, Instance: s.node.ID(),
		Leader: s.node.IsLeader(), Served: time.Now().UTC().Format("15:04:05.000"), Flash: r.URL.Query().Get("flash"),
		Banner: s.node.Settings().String(bannerKey, ""), Data: data}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", p); err != nil {
		s.log.Error("shop: rendering", "page", name, "err", err)
	}
}

// fail renders an error page.
func (s *Shop) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", http.StatusText(status), msg)
}

// failErr logs err and renders a 500 page, or 503 when the request's context ended.
func (s *Shop) failErr(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("shop: request failed", "path", r.URL.Path, "err", err)
	status := http.StatusInternalServerError
	if r.Context().Err() != nil {
		status = http.StatusServiceUnavailable
	}
	s.fail(w, r, status, "Something went wrong on this instance; try again.")
}

var funcs = template.FuncMap{
	"money": func(cents int64) string { return fmt.Sprintf("€%d.%02d", cents/100, cents%100) },
	"euros": func(cents int64) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"mul": func(a, b int64) int64 { return a * b },
}

// parsePages parses each page with the layout.
func parsePages() (map[string]*template.Template, error) {
	names := []string{"login", "catalogue", "cart", "orders", "order", "admin", "reports", "chat", "error"}
	out := map[string]*template.Template{}
	for _, n := range names {
		t, err := template.New(n).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("shop: page %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}
