// twice-realtime.js: the browser client of twice's real-time hub (package realtime).
// One file, no build step, no dependency. It connects, subscribes to rooms, reconnects
// with backoff (to whichever instance the load balancer picks) and resumes each room from
// its last position: the hub then sends exactly the messages missed, or says the
// recovery is impossible (onLost), never a silent gap.
//
//   const rt = new TwiceRealtime("/realtime", {
//     onMessage(room, data, pos) { ... },          // pos = {offset, epoch}
//     onLost(room, reason) { ... },                // reload the room's state from the app
//     onStatus(status) { ... },                    // "connecting", "open", "closed"
//   });
//   rt.subscribe("lobby");
//   rt.subscribe("news", {offset: 41, epoch: "e1"}); // after a position the page shows
//   rt.subscribe("@user");                         // messages sent to this user
//   rt.publish("lobby", {text: "hi"});             // if the hub's CanPublish allows it
//   rt.close();
(function (global) {
  "use strict";

  function TwiceRealtime(url, opts) {
    opts = opts || {};
    this.url = absolute(url);
    this.onMessage = opts.onMessage || function () {};
    this.onLost = opts.onLost || function () {};
    this.onStatus = opts.onStatus || function () {};
    this.onError = opts.onError || function () {};
    this.minDelay = opts.minDelay || 250;
    this.maxDelay = opts.maxDelay || 10000;
    this.rooms = {}; // room -> {offset, epoch} or null (from now on)
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.nextID = 0;
    this._connect();
  }

  function absolute(url) {
    if (/^wss?:/.test(url)) return url;
    var l = global.location;
    return (l.protocol === "https:" ? "wss://" : "ws://") + l.host + url;
  }

  TwiceRealtime.prototype._connect = function () {
    var self = this;
    if (self.closed) return;
    self.onStatus("connecting");
    var ws = new WebSocket(self.url);
    self.ws = ws;
    ws.onopen = function () {
      // The backoff starts again only once the hub has welcomed the connection or taken a
      // subscription (see _frame): an instance that closes at once (1013, "try again
      // later", while its database is away) is retried ever more slowly.
      self.onStatus("open");
      Object.keys(self.rooms).forEach(function (room) { self._subscribe(room); });
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      self._frame(f);
    };
    ws.onclose = function () {
      if (self.ws !== ws) return;
      self.ws = null;
      self.onStatus("closed");
      if (self.closed) return;
      // Exponential backoff with jitter, so a crashed instance's clients do not all
      // reconnect at the same moment.
      var d = Math.min(self.maxDelay, self.minDelay * Math.pow(2, self.attempt++));
      setTimeout(function () { self._connect(); }, d / 2 + Math.random() * d / 2);
    };
  };

  TwiceRealtime.prototype._frame = function (f) {
    var pos = this.rooms[f.room];
    switch (f.type) {
      case "welcome":
        if (Object.keys(this.rooms).length === 0) this.attempt = 0;
        break;
      case "subscribed":
        this.attempt = 0;
        if (f.recovered === false) this.onLost(f.room, "unrecoverable");
        if (f.room in this.rooms) this.rooms[f.room] = {offset: f.offset, epoch: f.epoch || ""};
        break;
      case "message":
        if (!(f.room in this.rooms)) return;
        if (pos && pos.epoch === f.epoch && f.offset <= pos.offset) return; // seen already
        this.rooms[f.room] = {offset: f.offset, epoch: f.epoch};
        this.onMessage(f.room, f.data, {offset: f.offset, epoch: f.epoch});
        break;
      case "lost":
        if (f.room in this.rooms) this.rooms[f.room] = {offset: f.offset, epoch: f.epoch || ""};
        this.onLost(f.room, f.reason);
        break;
      case "error":
        this.onError(f.error, f.room, f.id);
        break;
    }
  };

  TwiceRealtime.prototype._send = function (f) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(f));
      return true;
    }
    return false;
  };

  TwiceRealtime.prototype._subscribe = function (room) {
    var pos = this.rooms[room], f = {type: "subscribe", room: room};
    if (pos) { f.offset = pos.offset; f.epoch = pos.epoch; }
    this._send(f);
  };

  // subscribe follows room (or "@user", the user's own messages) from now on, or from
  // position from = {offset, epoch} when given (a page rendered with the room's history up
  // to there: the messages after it follow, or onLost if they cannot), and from where it
  // left off after every reconnection.
  TwiceRealtime.prototype.subscribe = function (room, from) {
    if (room in this.rooms) return;
    this.rooms[room] = from ? {offset: Number(from.offset), epoch: String(from.epoch || "")} : null;
    this._subscribe(room);
  };

  // unsubscribe stops following room.
  TwiceRealtime.prototype.unsubscribe = function (room) {
    delete this.rooms[room];
    this._send({type: "unsubscribe", room: room});
  };

  // publish sends data (any JSON value) to room; it returns false when not connected.
  TwiceRealtime.prototype.publish = function (room, data) {
    return this._send({type: "publish", room: room, data: data, id: String(++this.nextID)});
  };

  // position returns the last {offset, epoch} seen in room, or null.
  TwiceRealtime.prototype.position = function (room) { return this.rooms[room] || null; };

  // close disconnects for good.
  TwiceRealtime.prototype.close = function () {
    this.closed = true;
    if (this.ws) this.ws.close();
  };

  global.TwiceRealtime = TwiceRealtime;
})(typeof window !== "undefined" ? window : this);
