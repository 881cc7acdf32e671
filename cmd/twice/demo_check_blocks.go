package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// checkBlocks goes on with the pages of the other building blocks, through the proxy: the
// order's fulfilment workflow completes; its order.placed event is counted once in the
// catalogue's sales (wantSold units of product); a chat message posted through one
// instance reaches a page connected to the hub through another, live, while its user shows
// online; a banner saved through one instance shows on the pages of others; a restock runs
// under the lock; and the metrics are served.
func (k *shopCheck) checkBlocks(ctx context.Context, order, product string, wantSold int, user string) error {
	err := k.step(ctx, "see the fulfilment workflow complete", func() error {
		body, err := k.get(ctx, order)
		if err != nil {
			return err
		}
		m := fulfilled.FindStringSubmatch(body)
		if m == nil {
			return fmt.Errorf("%w: the fulfilment of order %s has not completed", errRetry, order)
		}
		if m[1] != "completed" {
			return fmt.Errorf("the fulfilment of order %s ended %s", order, m[1])
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.say("its fulfilment workflow completed: stock reserved, card charged, parcel shipped")

	err = k.step(ctx, "see the sale counted once", func() error {
		body, err := k.get(ctx, "/catalogue")
		if err != nil {
			return err
		}
		sold, err := soldOf(body, product)
		switch {
		case err != nil:
			return err
		case sold < wantSold:
			return fmt.Errorf("%w: the catalogue counts %d sold, want %d", errRetry, sold, wantSold)
		case sold > wantSold:
			return fmt.Errorf("the catalogue counts %d sold, want %d: the order.placed event was counted twice", sold, wantSold)
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.say("the catalogue counts its sale once (%d sold), from its order.placed event", wantSold)

	var via, to string
	err = k.step(ctx, "deliver a chat message live", func() error {
		var err error
		via, to, err = k.chat(ctx, user)
		return err
	})
	if err != nil {
		return err
	}
	k.say("a chat message posted via instance %s reached, live, a page connected to instance %s, its user online", via, to)

	banner := "twice demo check " + randHex(3)
	var seen []string
	err = k.step(ctx, "show the banner on two instances", func() error {
		if _, _, err := k.post(ctx, "/admin/banner", url.Values{"banner": {banner}}, http.StatusSeeOther); err != nil {
			return err
		}
		seen, err = k.seenOn(ctx, `id="banner">`+banner+`<`)
		return err
	})
	if err != nil {
		return err
	}
	k.say("a banner saved as a setting shows on the pages of instances %s", strings.Join(seen, ", "))
	err = k.step(ctx, "take the banner down", func() error {
		_, _, err := k.post(ctx, "/admin/banner", url.Values{"banner": {""}}, http.StatusSeeOther)
		return err
	})
	if err != nil {
		return err
	}

	err = k.step(ctx, "restock under the lock", func() error {
		loc, _, err := k.post(ctx, "/admin/restock", url.Values{}, http.StatusSeeOther)
		if err == nil && !strings.Contains(loc, "Restocked") {
			err = fmt.Errorf("the restock sent us to %q", loc)
		}
		return err
	})
	if err != nil {
		return err
	}
	k.say("restocked under the cluster-wide restock lock")

	err = k.step(ctx, "serve the metrics", func() error {
		body, err := k.get(ctx, "/metrics")
		if err == nil && !strings.Contains(body, "_http_requests_total{") { // the pages, counted by route
			err = errors.New("/metrics counts no request by route")
		}
		return err
	})
	if err != nil {
		return err
	}
	k.say("/metrics serves the node's Prometheus metrics")
	return nil
}

var (
	fulfilled    = regexp.MustCompile(`id="fulfilment" class="(?:ok|error)">(\w+)<`)
	chatPosition = regexp.MustCompile(`data-room="([^"]+)" data-offset="(\d+)" data-epoch="([^"]*)"`)
)

// soldOf reads how many units of product the catalogue says were sold.
func soldOf(catalogue, product string) (int, error) {
	m := regexp.MustCompile(`id="sold-` + regexp.QuoteMeta(product) + `">(\d+) sold<`).FindStringSubmatch(catalogue)
	if m == nil {
		return 0, fmt.Errorf("the catalogue does not say how many of product %s were sold", product)
	}
	return strconv.Atoi(m[1])
}

// seenOn reads the catalogue until pages from two instances showed want, and returns
// their slots.
func (k *shopCheck) seenOn(ctx context.Context, want string) ([]string, error) {
	on := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		h, body, err := k.do(ctx, http.MethodGet, "/catalogue", nil, http.StatusOK)
		if err == nil && strings.Contains(body, want) {
			on[k.served(h)] = true
			if len(on) >= 2 {
				return keys(on), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("%w: the banner showed on the pages of %d instance(s) in 10s, want 2", errRetry, len(on))
}

// chatFrame is a frame of the realtime hub, with a chat message as its data.
type chatFrame struct {
	Type      string `json:"type"`
	Recovered *bool  `json:"recovered"`
	Error     string `json:"error"`
	Data      struct {
		ID int64 `json:"id"`
	} `json:"data"`
}

// chat opens the chat page, connects to the hub as its script does (through the proxy,
// with the session's cookie) and follows the room from the page's position; then it posts
// a message as the page's script does and waits for it on the connection, and for the
// user to show online. It returns the slots of the instances that took the post and held
// the connection.
func (k *shopCheck) chat(outer context.Context, user string) (via, to string, err error) {
	page, err := k.get(outer, "/chat")
	if err != nil {
		return "", "", err
	}
	pos := chatPosition.FindStringSubmatch(page)
	if pos == nil {
		return "", "", errors.New("the chat page gives no position in the room")
	}
	ctx, cancel := context.WithTimeout(outer, 10*time.Second)
	defer cancel()
	defer func() {
		if err != nil && !errors.Is(err, errRetry) && ctx.Err() != nil && outer.Err() == nil {
			err = fmt.Errorf("%w: %v", errRetry, err) // this try's time is up, not the step's
		}
	}()
	u, _ := url.Parse(k.base)
	h := http.Header{}
	for _, c := range k.jar.Cookies(u) {
		h.Add("Cookie", c.String())
	}
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(k.base, "http")+"/realtime", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return "", "", fmt.Errorf("%w: connecting to the hub: %v", errRetry, err)
	}
	defer ws.CloseNow()
	to = k.served(resp.Header)
	sub, _ := json.Marshal(map[string]any{"type": "subscribe", "room": pos[1], "offset": json.Number(pos[2]), "epoch": pos[3]})
	if err := ws.Write(ctx, websocket.MessageText, sub); err != nil {
		return "", "", fmt.Errorf("%w: subscribing: %v", errRetry, err)
	}
	frames := make(chan chatFrame, 64)
	go func() {
		defer close(frames)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var f chatFrame
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	ph, body, err := k.doAccept(ctx, http.MethodPost, "/chat", url.Values{"body": {"hello from twice demo's check " + randHex(3)}},
		http.StatusOK, "application/json")
	if err != nil {
		return "", "", err
	}
	via = k.served(ph)
	var posted struct{ ID int64 }
	if err := json.Unmarshal([]byte(body), &posted); err != nil || posted.ID == 0 {
		return "", "", fmt.Errorf("posting to the chat answered %q", body)
	}
	for f := range frames {
		switch {
		case f.Type == "error":
			return "", "", fmt.Errorf("the hub refused the subscription: %s", f.Error)
		case f.Type == "subscribed" && f.Recovered != nil && !*f.Recovered:
			return "", "", errors.New("the hub could not resume the room from the page's position")
		case f.Type == "message" && f.Data.ID == posted.ID:
			return via, to, k.online(ctx, user)
		}
	}
	return "", "", fmt.Errorf("%w: message %d did not arrive on the connection to instance %s", errRetry, posted.ID, to)
}

// online waits until the chat's list of who is online names user.
func (k *shopCheck) online(ctx context.Context, user string) error {
	for {
		body, err := k.get(ctx, "/chat/online")
		if err != nil {
			return err
		}
		var v struct{ Online []string }
		if json.Unmarshal([]byte(body), &v) == nil && slices.Contains(v.Online, user) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s, connected to the hub, is not online in the chat: %s", errRetry, user, body)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
