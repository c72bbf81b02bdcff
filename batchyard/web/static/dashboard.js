// The dashboard's own behaviour, kept small (htmx does the rest): the CSRF token on htmx
// requests, the Compare button, local times on hover, copy buttons.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  document.addEventListener("htmx:configRequest", function (event) {
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  function compareState() {
    var button = document.getElementById("compare-button");
    if (!button) { return; }
    var ticked = document.querySelectorAll("input.pick:checked").length;
    button.disabled = ticked < 2;
    var hint = document.getElementById("compare-hint");
    if (hint) { hint.textContent = ticked < 2 ? "Tick two or more." : ticked + " ticked."; }
  }
  document.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("pick")) { compareState(); }
  });

  // A filter form leaves its empty fields out of the URL: a shorter link to copy.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("filters")) { return; }
    form.querySelectorAll("input, select").forEach(function (field) {
      if (field.name && field.value === "") { field.disabled = true; }
    });
    window.setTimeout(function () {
      form.querySelectorAll(":disabled").forEach(function (f) { f.disabled = false; });
    }, 0);
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.title = when.toLocaleString() + " (local) · " + el.textContent + " UTC"; }
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = "Copied";
      });
    }
  });

  // The batch page's connection chip: live, reconnecting, offline, polling, paused, or
  // ended once the batch has.
  function chip(text) {
    var el = document.getElementById("live-chip");
    if (el) { el.textContent = text; el.setAttribute("data-state", text); }
  }

  // -- The stream's reconnection schedule ---------------------------------------------------
  // A dropped or refused stream is opened again after 1, 2, 4, 8, then every 16 s, not on
  // the SSE extension's own delays (0.5 s doubling to 64 s). The extension makes its
  // EventSource through htmx.createEventSource: ours hands it a Stream that never says it
  // is CLOSED (so the extension schedules no retry of its own) and opens a fresh
  // EventSource behind it after each delay, with the extension's listeners on it. Every
  // event is the whole live region, so the first one after a reconnect holds all that
  // changed meanwhile: nothing is missed.
  var RETRY = [1000, 2000, 4000, 8000, 16000];
  function Stream(url) {
    this.url = url;
    this.readyState = 0;
    this.onopen = null;
    this.onerror = null;
    this.listeners = {};
    this.failures = 0;  // in a row, since the stream last opened
    this.timer = null;
    this.open();
  }
  Stream.prototype.open = function () {
    var self = this;
    var source = new EventSource(this.url, { withCredentials: true });
    this.source = source;
    this.timer = null;
    var shown = document.getElementById("live-chip");
    if (shown) {  // an attempt in flight: no retry is scheduled until it fails
      shown.setAttribute("data-tries", String(Number(shown.getAttribute("data-tries") || 0) + 1));
      shown.removeAttribute("data-retry");
    }
    Object.keys(this.listeners).forEach(function (type) {
      self.listeners[type].forEach(function (fn) { source.addEventListener(type, fn); });
    });
    source.onopen = function (event) {
      self.failures = 0;
      if (shown) { shown.removeAttribute("title"); }
      self.readyState = 1;
      if (self.onopen) { self.onopen(event); }
    };
    source.onerror = function (event) {
      source.close();  // no reconnection by the browser's own rule either
      if (self.readyState === 2 || self.source !== source) { return; }
      self.readyState = 0;
      self.retry = RETRY[Math.min(self.failures, RETRY.length - 1)];
      self.failures += 1;
      if (self.onerror) { self.onerror(event); }
      if (self.readyState === 2) { return; }
      self.timer = window.setTimeout(function () { self.open(); }, self.retry);
      var shown = document.getElementById("live-chip");
      if (shown) {
        shown.setAttribute("data-retry", String(self.retry));
        shown.title = "trying again in " + self.retry / 1000 + " s";
      }
    };
  };
  Stream.prototype.addEventListener = function (type, fn) {
    (this.listeners[type] = this.listeners[type] || []).push(fn);
    this.source.addEventListener(type, fn);
  };
  Stream.prototype.removeEventListener = function (type, fn) {
    this.listeners[type] = (this.listeners[type] || []).filter(function (f) { return f !== fn; });
    this.source.removeEventListener(type, fn);
  };
  Stream.prototype.close = function () {
    this.readyState = 2;
    if (this.timer !== null) { window.clearTimeout(this.timer); this.timer = null; }
    this.source.close();
  };
  // Back online: the waiting stream opens now rather than at the end of its delay.
  Stream.prototype.now = function () {
    if (this.timer === null || this.readyState === 2) { return; }
    window.clearTimeout(this.timer);
    this.open();
  };
  var streams = [];
  if (window.htmx) {
    htmx.createEventSource = function (url) {
      var stream = new Stream(url);
      streams = streams.filter(function (s) { return s.readyState !== 2; }).concat([stream]);
      return stream;
    };
  }
  window.addEventListener("online", function () { streams.forEach(function (s) { s.now(); }); });

  // A stream that fails 3 times without ever opening (a proxy that refuses SSE, say) gives
  // way to polling the region every 2 s, as a server without streams does.
  var opened = false;
  var failures = 0;
  document.addEventListener("htmx:sseOpen", function () { opened = true; failures = 0; chip("live"); });
  document.addEventListener("htmx:sseError", function () {
    failures += 1;
    if (!opened && failures >= 3) { poll(); return; }
    chip(navigator.onLine === false ? "offline" : "reconnecting");
  });
  // "N items finished since the items table was loaded: refresh it" links to the page as
  // it is (its filter, its first page, #items): a link that differs from the address only
  // by its fragment would just scroll, so it reloads.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest(".refresh a");
    if (!link || link.pathname + link.search !== location.pathname + location.search) { return; }
    event.preventDefault();
    location.hash = "items";
    location.reload();
  });
  // -- end of the reconnection schedule -------------------------------------------------------
  function poll() {
    var wrap = document.getElementById("live-wrap");
    var live = document.getElementById("live");
    if (!wrap || !live || !window.htmx) { return; }
    wrap.removeAttribute("sse-connect");  // no reconnection either
    wrap.removeAttribute("sse-swap");
    htmx.trigger(wrap, "htmx:beforeCleanupElement");
    live.setAttribute("hx-get", wrap.getAttribute("data-poll"));
    live.setAttribute("hx-trigger", "every 2s");
    live.setAttribute("hx-swap", "outerHTML");
    htmx.process(live);
    wrap.setAttribute("data-ended", "");  // the visibility handler leaves it alone
    chip("polling");
  }
  document.addEventListener("htmx:sseClose", function (event) {
    if (event.detail && event.detail.type === "message") {  // sse-close: the batch ended
      event.target.setAttribute("data-ended", "");
      chip("ended");
    }
  });

  // A hidden tab closes its stream; shown again, a fresh one starts with the region as it
  // stands (the server sends it first), so nothing is missed.
  document.addEventListener("visibilitychange", function () {
    var wrap = document.getElementById("live-wrap");
    if (!wrap || !window.htmx || wrap.hasAttribute("data-ended")) { return; }
    if (document.hidden) {
      htmx.trigger(wrap, "htmx:beforeCleanupElement");
      chip("paused");
    } else {
      var fresh = wrap.cloneNode(true);
      wrap.replaceWith(fresh);
      htmx.process(fresh);
      chip("connecting");
    }
  });

  // "about 12 s" counts down between repaints (a rate limit's wait).
  window.setInterval(function () {
    document.querySelectorAll("[data-seconds]").forEach(function (el) {
      var left = Math.max(0, Math.round(parseFloat(el.getAttribute("data-seconds")) - 1));
      el.setAttribute("data-seconds", String(left));
      el.textContent = left >= 60 ? Math.floor(left / 60) + " min " + String(left % 60).padStart(2, "0") + " s" : left + " s";
    });
  }, 1000);

  // The theme toggle: auto (the system's), light, dark; remembered in this browser.
  var THEMES = ["auto", "light", "dark"];
  function showTheme(button) {
    var theme = document.documentElement.getAttribute("data-theme") || "auto";
    button.textContent = "Theme: " + theme;
    button.setAttribute("aria-label", "Colour theme: " + (theme === "auto" ? "as the system's" : theme) + " (change)");
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#theme-toggle");
    if (!button) { return; }
    var now = document.documentElement.getAttribute("data-theme") || "auto";
    var next = THEMES[(THEMES.indexOf(now) + 1) % THEMES.length];
    if (next === "auto") { document.documentElement.removeAttribute("data-theme"); }
    else { document.documentElement.setAttribute("data-theme", next); }
    try { window.localStorage.setItem("batchyard-theme", next); } catch (e) { /* not kept */ }
    showTheme(button);
  });

  document.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); });
  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) { showTheme(toggle); }
    compareState();
    localTimes(document);
  });
})();
