// Package dashboard serves a web page of one service's cluster: its instances with their
// health and request-based availability (as each reports them with its heartbeat, see
// [cluster.Report]), its leader, its job queues and jobs, workflows, event consumer groups and dead letters, cron
// schedules, settings with their history, the locks and leases held, and the sessions and
// users online; with the actions an operator needs (retry, cancel or discard a job or every job a
// filter matches, pause a queue, cancel a workflow, replay a group, change a setting after
// a confirmation).
//
// The pages are rendered on the server from templates built into the binary and mounted in
// the application's own mux under any prefix:
//
//	d, err := dashboard.Handler(node, dashboard.Config{Token: os.Getenv("TWICE_DASHBOARD_TOKEN")})
//	mux.Handle("/admin/", http.StripPrefix("/admin", d))
//
// `twice dashboard --dsn DSN` serves the same pages from a machine that runs no instance.
//
// The database pays the same whether one person or fifty watch: one refresher per
// dashboard reads a snapshot every [Config.Interval] while at least one viewer is connected
// and nothing while nobody is, and every viewer gets that snapshot pushed as server-sent
// events; a page load reads only when the last snapshot is older than the interval. Only
// the jobs page's filtered list and a single workflow's or setting's history are read at
// the viewer's request, once per page load.
//
// Actions are POSTs refused from other origins ([http.CrossOriginProtection]) and logged
// with who took them. Without a token only requests from loopback are served, unless
// [Config.NoAuth]. With [Config.Token] set, every request needs the token (as the
// basic-auth password, the user name being who acts, or as a bearer token);
// [Config.ReadOnlyToken] and [Config.ReadOnly] give a role that sees the pages without
// their actions.
package dashboard
