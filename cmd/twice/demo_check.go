package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// shopCheck walks through the demo shop's pages as a person would, through the proxy: log
// in, read the catalogue, order with the form's Idempotency-Key (twice: one order), see the
// confirmation job's effect, change the order with its version and be refused with an old
// one; then the blocks the other pages use (see checkBlocks), and the cart (checkCart). Each step is tried again
// while the shop answers 5xx or the connection fails (an instance killed by chaos), with
// the same key for the order.
type shopCheck struct {
	base      string
	c         *http.Client
	jar       http.CookieJar
	out       io.Writer
	instances map[string]bool // slots named by X-Served-By
	tries     int             // of the last step
	last      error           // the last step's last failed try
}

// shopCheckResult is what the check saw.
type shopCheckResult struct {
	instances map[string]bool // the slots of the instances that served the pages
	order     string          // the order's path
	forwarded int             // cart requests that reached an instance not owning the cart
}

// stepTime bounds one step, retries included.
const stepTime = 30 * time.Second

// errRetry marks an answer worth trying again: a connection that failed, a 5xx, a 409.
var errRetry = errors.New("try again")

// checkShop runs the check against the shop at base.
func checkShop(ctx context.Context, base string, out io.Writer) (shopCheckResult, error) {
	jar, _ := cookiejar.New(nil)
	k := &shopCheck{base: base, c: httpClient(jar), jar: jar, out: out, instances: map[string]bool{}}
	res := shopCheckResult{instances: k.instances}
	user := "demo-" + randHex(3)

	err := k.step(ctx, "log in", func() error {
		loc, _, err := k.post(ctx, "/login", url.Values{"name": {user}}, http.StatusSeeOther)
		if err == nil && loc != "/catalogue" {
			err = fmt.Errorf("the login sent us to %q, not /catalogue", loc)
		}
		return err
	})
	if err != nil {
		return res, err
	}
	k.say("logged in as %s", user)

	var product, key string
	var sold int
	err = k.step(ctx, "the catalogue", func() error {
		body, err := k.get(ctx, "/catalogue")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `id="user">`+user+`<`) {
			return errors.New("the catalogue does not show the user logged in: the session did not reach this instance")
		}
		m := orderForm.FindStringSubmatch(body)
		if m == nil {
			return errors.New("the catalogue has no order form with an idempotency key")
		}
		product, key = m[1], m[2]
		sold, err = soldOf(body, product)
		return err
	})
	if err != nil {
		return res, err
	}
	k.say("the catalogue lists products, each order form with its own Idempotency-Key")

	form := url.Values{"product": {product}, "quantity": {"2"}, "idempotency_key": {key}}
	err = k.step(ctx, "place an order", func() error {
		loc, _, err := k.post(ctx, "/orders", form, http.StatusSeeOther)
		if err == nil && !orderPath.MatchString(loc) {
			err = fmt.Errorf("placing the order sent us to %q, not to an order", loc)
		}
		res.order = strings.SplitN(loc, "?", 2)[0]
		return err
	})
	if err != nil {
		return res, err
	}
	k.say("placed order %s", res.order)

	err = k.step(ctx, "send the order again", func() error {
		loc, h, err := k.post(ctx, "/orders", form, http.StatusSeeOther)
		switch {
		case err != nil:
			return err
		case strings.SplitN(loc, "?", 2)[0] != res.order:
			return fmt.Errorf("the same Idempotency-Key placed another order: %s after %s", loc, res.order)
		case h.Get("Idempotent-Replayed") != "true":
			return errors.New("the second send with the same Idempotency-Key was not a replay")
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	k.say("sent it again with the same key: the same order, placed once")

	var version string
	err = k.step(ctx, "see the confirmation", func() error {
		body, err := k.get(ctx, res.order)
		if err != nil {
			return err
		}
		m := confirmation.FindStringSubmatch(body)
		if m == nil {
			return fmt.Errorf("%w: order %s is not confirmed yet", errRetry, res.order)
		}
		version = versionField.FindStringSubmatch(body)[1]
		k.say("%s", m[1])
		return nil
	})
	if err != nil {
		return res, err
	}

	edit := url.Values{"quantity": {"3"}, "note": {"checked by twice demo"}, "version": {version}}
	lost := false // a try whose answer was lost may have saved the change
	err = k.step(ctx, "change the order with If-Match", func() error {
		_, _, err := k.post(ctx, res.order, edit, http.StatusSeeOther)
		var st statusError
		if errors.As(err, &st) && st.got == http.StatusPreconditionFailed && lost {
			return nil
		}
		lost = lost || errors.Is(err, errRetry)
		return err
	})
	if err != nil {
		return res, err
	}
	err = k.step(ctx, "refuse a change to an old version", func() error {
		_, _, err := k.post(ctx, res.order, edit, http.StatusPreconditionFailed)
		return err
	})
	if err != nil {
		return res, err
	}
	k.say("changed it at version %s; the same change sent again, at that old version, is refused (412)", version)
	if err := k.checkBlocks(ctx, res.order, product, sold+2, user); err != nil {
		return res, err
	}
	res.forwarded, err = k.checkCart(ctx)
	return res, err
}

var (
	orderForm    = regexp.MustCompile(`name="product" value="(\d+)">\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">`)
	orderPath    = regexp.MustCompile(`^/orders/\d+(\?|$)`)
	confirmation = regexp.MustCompile(`id="confirmation"[^>]*>\s*(Confirmed at [^:]+:\d\d:\d\d UTC by instance \d+)`)
	versionField = regexp.MustCompile(`name="version" value="(\d+)"`)
)

// say reports a step that passed, with how many tries it took when more than one.
func (k *shopCheck) say(format string, args ...any) {
	line := fmt.Sprintf("  ✓ "+format, args...)
	if k.tries > 1 {
		line += fmt.Sprintf(" (after %d tries: %v)", k.tries, k.last)
	}
	fmt.Fprintln(k.out, line)
}

// step runs fn until it succeeds, fails for good, or stepTime passes.
func (k *shopCheck) step(ctx context.Context, what string, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, stepTime)
	defer cancel()
	k.tries, k.last = 0, nil
	for {
		k.tries++
		err := fn()
		if err == nil {
			return nil
		}
		k.last = err
		if !errors.Is(err, errRetry) {
			return fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: still failing when time was up: %w", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// statusError is an answer with a status the step did not expect.
type statusError struct {
	method, path string
	got, want    int
	body         string
}

func (e statusError) Error() string {
	return fmt.Sprintf("%s %s: %d, want %d: %s", e.method, e.path, e.got, e.want, e.body)
}

// Is makes a 5xx or a 409 (a request with the key still running) worth trying again.
func (e statusError) Is(target error) bool {
	return target == errRetry && (e.got >= 500 || e.got == http.StatusConflict)
}

func (k *shopCheck) get(ctx context.Context, path string) (string, error) {
	_, body, err := k.do(ctx, http.MethodGet, path, nil, http.StatusOK)
	return body, err
}

// post sends form to path and returns the answer's Location and headers.
func (k *shopCheck) post(ctx context.Context, path string, form url.Values, want int) (string, http.Header, error) {
	h, _, err := k.do(ctx, http.MethodPost, path, form, want)
	if err != nil {
		return "", nil, err
	}
	return h.Get("Location"), h, nil
}

// served notes the instance that answered, named by X-Served-By, and returns its slot.
func (k *shopCheck) served(h http.Header) string {
	by := strings.Fields(h.Get("X-Served-By"))
	if len(by) == 0 {
		return "?"
	}
	k.instances[by[0]] = true
	return by[0]
}

func (k *shopCheck) do(ctx context.Context, method, path string, form url.Values, want int) (http.Header, string, error) {
	return k.doAccept(ctx, method, path, form, want, "")
}

// doAccept is do with an Accept header, unless accept is "".
func (k *shopCheck) doAccept(ctx context.Context, method, path string, form url.Values, want int, accept string) (http.Header, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := k.c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("%w: %s %s: %v", errRetry, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s %s: %v", errRetry, method, path, err)
	}
	k.served(resp.Header)
	if resp.StatusCode != want {
		return nil, "", statusError{method: method, path: path, got: resp.StatusCode, want: want, body: snippet(string(b))}
	}
	return resp.Header, string(b), nil
}

// snippet is the start of a page, for an error message: the error paragraph if it has one.
func snippet(body string) string {
	if m := errorPara.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	body = strings.TrimSpace(body)
	if len(body) > 200 {
		body = body[:200] + "…"
	}
	return body
}

var errorPara = regexp.MustCompile(`class="error"[^>]*>([^<]*)<`)
