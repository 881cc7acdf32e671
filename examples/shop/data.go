package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// The shop's statements: the same text on both stores (placeholders, RETURNING and
// ON CONFLICT are portable; times are bound with TimeArg and scanned into store.Time).
const (
	sqlProducts = `SELECT p.id, p.name, p.price_cents, p.version, p.stock, coalesce(s.sold, 0)
		FROM shop_products p LEFT JOIN shop_sales s ON s.product_id = p.id ORDER BY p.id`
	sqlPrice      = `SELECT price_cents FROM shop_products WHERE id = $1`
	sqlPlaceOrder = `INSERT INTO shop_orders (user_id, product_id, quantity, price_cents, note, placed_by)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`
	orderColumns = `o.id, o.user_id, o.product_id, p.name, o.quantity, o.price_cents, o.note, o.version,
		o.placed_by, o.created_at, o.confirmed_at, o.confirmed_by`
	sqlOrder   = `SELECT ` + orderColumns + ` FROM shop_orders o JOIN shop_products p ON p.id = o.product_id WHERE o.id = $1 AND o.user_id = $2`
	sqlOrders  = `SELECT ` + orderColumns + ` FROM shop_orders o JOIN shop_products p ON p.id = o.product_id WHERE o.user_id = $1 ORDER BY o.id DESC LIMIT 50`
	sqlConfirm = `UPDATE shop_orders SET confirmed_at = $2, confirmed_by = $3 WHERE id = $1 AND confirmed_at IS NULL`
	sqlSales   = `SELECT count(*), coalesce(sum(quantity * price_cents), 0) FROM shop_orders WHERE created_at < $1`
	sqlReport  = `INSERT INTO shop_reports (tick, orders, revenue, made_by) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tick) DO NOTHING`
	sqlReports = `SELECT tick, orders, revenue, made_by, made_at FROM shop_reports ORDER BY tick DESC LIMIT 30`
)

// product is a row of shop_products.
type product struct {
	ID      int64
	Name    string
	Price   int64 // cents
	Version int64
	Stock   int64 // units left, after the reservations of orders being fulfilled
	Sold    int64 // units ordered, counted from the order.placed events
}

// catalogue is the cached list of products, with who loaded it when: the page shows
// whether it came from this instance's cache.
type catalogue struct {
	Products   []product
	BestSeller int64 // the id of the product sold most, 0 before any sale
	LoadedBy   string
	LoadedAt   time.Time
}

// loadCatalogue is the cache's loader: it runs on a miss, after an invalidation.
func (s *Shop) loadCatalogue(ctx context.Context, _ string) (catalogue, error) {
	rows, err := s.node.Store().Reader().Query(ctx, sqlProducts)
	if err != nil {
		return catalogue{}, err
	}
	defer rows.Close()
	c := catalogue{LoadedBy: s.slot + " " + s.node.ID(), LoadedAt: time.Now()}
	var most int64
	for rows.Next() {
		var p product
		if err := rows.Scan(&p.ID, &p.Name, &p.Price, &p.Version, &p.Stock, &p.Sold); err != nil {
			return catalogue{}, err
		}
		if p.Sold > most {
			c.BestSeller, most = p.ID, p.Sold
		}
		c.Products = append(c.Products, p)
	}
	return c, rows.Err()
}

// order is a row of shop_orders with its product's name.
type order struct {
	ID          int64
	User        string
	ProductID   int64
	Product     string
	Quantity    int64
	Price       int64 // cents, each, at the time of the order
	Note        string
	Version     int64
	PlacedBy    string
	Created     time.Time
	Confirmed   time.Time // zero until the confirmation job ran
	ConfirmedBy string
}

func scanOrder(sc interface{ Scan(...any) error }) (order, error) {
	var o order
	var created, confirmed store.Time
	err := sc.Scan(&o.ID, &o.User, &o.ProductID, &o.Product, &o.Quantity, &o.Price, &o.Note, &o.Version,
		&o.PlacedBy, &created, &confirmed, &o.ConfirmedBy)
	o.Created, o.Confirmed = created.Time, confirmed.Time
	return o, err
}

// readOrder reads the user's order id; store.ErrNoRows if there is none.
func (s *Shop) readOrder(ctx context.Context, q store.Querier, user string, id int64) (order, error) {
	return scanOrder(q.QueryRow(ctx, sqlOrder, id, user))
}

func (s *Shop) readOrders(ctx context.Context, user string) ([]order, error) {
	rows, err := s.node.Store().Reader().Query(ctx, sqlOrders, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// confirmOrder is the job an order enqueues in its own transaction: it exists if and only
// if the order does.
type confirmOrder struct {
	OrderID int64 `json:"order_id"`
}

func (confirmOrder) Kind() string { return "shop.confirm-order" }

// confirm is confirmOrder's worker: it marks the order confirmed by this instance. Run twice
// (its instance killed after the update), it changes nothing the second time.
func (s *Shop) confirm(ctx context.Context, job *jobs.Job[confirmOrder]) error {
	st := s.node.Store()
	_, err := st.Exec(ctx, sqlConfirm, job.Args.OrderID, st.TimeArg(time.Now()), s.slot+" "+s.node.ID())
	return err
}

// report is the job of the cron schedule: one per minute's tick, cluster-wide.
type report struct{}

func (report) Kind() string { return "shop.report" }

// makeReport writes the tick's report: the orders placed before the tick (before the job
// was made, for a job triggered by hand). The cron block
// fires each tick once (a unique job per tick); the table's key on the tick keeps a rerun
// after a crash from writing a second row.
func (s *Shop) makeReport(ctx context.Context, job *jobs.Job[report]) error {
	tick, ok := cron.TickTime(job.Row)
	if !ok {
		tick = job.CreatedAt // `twice cron trigger shop-report`: a report as of now
	}
	st := s.node.Store()
	var orders, revenue int64
	if err := st.Reader().QueryRow(ctx, sqlSales, st.TimeArg(tick)).Scan(&orders, &revenue); err != nil {
		return fmt.Errorf("shop: report of %v: %w", tick, err)
	}
	if _, err := st.Exec(ctx, sqlReport, st.TimeArg(tick), orders, revenue, s.slot+" "+s.node.ID()); err != nil {
		return fmt.Errorf("shop: report of %v: %w", tick, err)
	}
	return nil
}

// reportRow is a row of shop_reports.
type reportRow struct {
	Tick    time.Time
	Orders  int64
	Revenue int64
	MadeBy  string
	MadeAt  time.Time
}

func (s *Shop) readReports(ctx context.Context) ([]reportRow, error) {
	rows, err := s.node.Store().Reader().Query(ctx, sqlReports)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []reportRow
	for rows.Next() {
		var r reportRow
		var tick, made store.Time
		if err := rows.Scan(&tick, &r.Orders, &r.Revenue, &r.MadeBy, &made); err != nil {
			return nil, err
		}
		r.Tick, r.MadeAt = tick.Time, made.Time
		out = append(out, r)
	}
	return out, rows.Err()
}
