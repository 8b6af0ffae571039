// A WebSocket to /api/v1/ws that stays up: it reconnects with a growing, jittered delay, sends
// its subscription again on each connection and, for exec events, the id of the last one it saw
// (resume_from), so a reconnect neither loses nor repeats an order, GTT or alert.
"use strict";

class LiveFeed {
  // options: { key: API key or null (the session cookie is sent by the browser),
  //            onMessage(msg), onOpen(), onState(state, detail) }
  constructor(options) {
    this.options = options;
    this.subscription = null;
    this.lastEventId = null;
    this.socket = null;
    this.retryMs = 500;
    this.stopped = true;
    this.timer = null;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/api/v1/ws`;
  }

  // A browser cannot set headers on a WebSocket: the key goes as a subprotocol, never in the URL
  // (where proxies would log it); the server answers with "ratchet".
  protocols() {
    return this.options.key ? ["ratchet", `ratchet.key.${this.options.key}`] : [];
  }

  start(subscription) {
    this.subscription = subscription;
    this.stopped = false;
    this.connect();
  }

  // Change what this feed follows (sent now when connected, else on the next connection).
  subscribe(subscription) {
    this.subscription = subscription;
    this.send({ action: "subscribe", ...subscription });
  }

  send(doc) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(doc));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
    this.socket = null;
  }

  connect() {
    if (this.stopped) return;
    this.options.onState("connecting");
    const socket = new WebSocket(this.url(), this.protocols());
    this.socket = socket;
    socket.onopen = () => {
      this.retryMs = 500;
      const resume = this.lastEventId ? { resume_from: this.lastEventId } : {};
      this.send({ action: "subscribe", ...this.subscription, ...resume });
      this.options.onState("live");
      if (this.options.onOpen) this.options.onOpen();
    };
    socket.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (msg.id) this.lastEventId = msg.id;
      if (msg.channel === "system" && msg.data.type === "resync") this.lastEventId = null;
      this.options.onMessage(msg);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      const delay = Math.min(this.retryMs, 10000) * (0.75 + Math.random() / 2);
      this.retryMs *= 2;
      this.options.onState("reconnecting", event.reason || `code ${event.code}`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}

window.LiveFeed = LiveFeed;
