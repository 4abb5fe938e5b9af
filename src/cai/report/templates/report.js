// The example browser: filters, pages and draws the items of the inline JSON blob. Data text is
// only ever set as textContent, never parsed as HTML.
(function () {
  "use strict";
  var PAGE = 50;
  var blob = document.getElementById("cai-data");
  var list = document.getElementById("ex-list");
  if (!blob || !list) return;
  var items = JSON.parse(blob.textContent).examples || [];
  var $ = function (id) { return document.getElementById(id); };
  var q = $("ex-q"), kind = $("ex-kind"), tag = $("ex-tag"), src = $("ex-src");
  var state = { page: 0, matched: [] };
  var KIND_LABEL = { revision: "revision", pair: "pair", redteam: "red team", eval: "eval" };

  function el(tagName, cls, text) {
    var e = document.createElement(tagName);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Text with every occurrence of the query wrapped in <mark>, built from text nodes.
  function marked(tagName, cls, text, needle) {
    var e = el(tagName, cls);
    text = text == null ? "" : String(text);
    if (!needle) { e.textContent = text; return e; }
    var low = text.toLowerCase(), at = 0, i;
    while ((i = low.indexOf(needle, at)) !== -1) {
      e.appendChild(document.createTextNode(text.slice(at, i)));
      e.appendChild(el("mark", null, text.slice(i, i + needle.length)));
      at = i + needle.length;
    }
    e.appendChild(document.createTextNode(text.slice(at)));
    return e;
  }

  function haystack(it) {
    if (it._h === undefined) {
      var parts = [it.id, it.src, it.prompt, it.initial, it.final, it.chosen, it.rejected, it.answer, it.label,
                   it.behavior, it.model, it.task].concat(it.tags || []);
      (it.context || []).forEach(function (m) { parts.push(m[1]); });
      (it.steps || []).forEach(function (s) { parts.push(s.principle, s.critique, s.revision); });
      it._h = parts.filter(function (p) { return p; }).join("\n").toLowerCase();
    }
    return it._h;
  }

  function options(select, values) {
    values.forEach(function (v) {
      var o = el("option", null, v[0] + " (" + v[1] + ")");
      o.value = v[0];
      select.appendChild(o);
    });
  }
  function counted(get) {
    var c = {};
    items.forEach(function (it) { get(it).forEach(function (v) { c[v] = (c[v] || 0) + 1; }); });
    return Object.keys(c).sort(function (a, b) { return c[b] - c[a] || (a < b ? -1 : 1); })
      .map(function (k) { return [k, c[k]]; });
  }
  options(tag, counted(function (it) { return it.tags || []; }));
  options(src, counted(function (it) { return [it.src]; }));

  function block(parent, label, text, needle, cls) {
    var b = el("div", "blk" + (cls ? " " + cls : ""));
    b.appendChild(el("div", "lbl", label));
    b.appendChild(marked("div", "txt", text === "" ? "(empty)" : text, needle));
    parent.appendChild(b);
    return b;
  }

  function body(it, needle) {
    var d = el("div", "body");
    (it.context || []).forEach(function (m) { block(d, m[0], m[1], needle, "ctx"); });
    if (it.behavior) block(d, "behavior", it.behavior, needle);
    block(d, it.kind === "redteam" ? "attack prompt" : "prompt", it.prompt, needle, "prompt");
    if (it.kind === "revision") {
      if (it.dropped) {
        block(d, "dropped by the revision filter", "no revision passed: " + (it.dropped.join(", ") || "no revision") +
              ". This record is not trained on.", needle, "bad");
      }
      block(d, "first answer", it.initial, needle);
      (it.steps || []).forEach(function (s, i) {
        var head = "round " + (i + 1) + " · " + s.principle;
        if (s.stopped) {
          var p = typeof s.p_comply === "number" ? " (P = " + s.p_comply.toFixed(2) + ")" : "";
          block(d, head, "judged to comply already" + p + "; not revised", needle, "stop");
          return;
        }
        var judged = typeof s.p_comply === "number" ? " (judged P(complies) " + s.p_comply.toFixed(2) + ")" : "";
        block(d, head + " · critique" + judged, s.critique, needle, "crit");
        block(d, head + " · revision" + (s.rejected ? " · rejected by the filter: " + s.rejected.join(", ") : ""),
              s.revision, needle, "rev");
      });
      var last = -1;
      (it.steps || []).forEach(function (s, i) { if (!s.stopped && s.revision) last = i; });
      if (it.revised && last >= 0 && it.steps[last].revision === it.final) {
        d.appendChild(el("p", "muted", "Final answer: the round " + (last + 1) + " revision above."));
      } else {
        block(d, it.revised ? "final answer" : "final answer (unchanged)", it.final, needle, "final");
      }
    } else if (it.kind === "pair") {
      var row = el("div", "pair");
      block(row, "chosen", it.chosen, needle, "chosen");
      block(row, "rejected", it.rejected, needle, "rejected");
      d.appendChild(row);
      var meta = [];
      if (typeof it.p_chosen === "number") meta.push("p_chosen " + it.p_chosen.toFixed(3));
      if (it.agree !== null && it.agree !== undefined) meta.push(it.agree ? "both orders agree" : "orders disagree");
      d.appendChild(el("p", "muted", meta.join(" · ")));
    } else {
      block(d, "answer" + (it.model ? " · " + it.model : ""), it.answer, needle, it.failed ? "bad" : "");
      var facts = [];
      if (it.label) facts.push("graded: " + it.label);
      if (typeof it.score === "number") facts.push("score " + it.score.toFixed(3));
      if (it.task) facts.push("task " + it.task);
      d.appendChild(el("p", "muted", facts.join(" · ")));
    }
    d.appendChild(el("p", "src", it.src + (it.id ? " · " + it.id : "")));
    return d;
  }

  function card(it, needle) {
    var det = el("details", "ex ex-" + it.kind);
    var sum = el("summary");
    sum.appendChild(el("span", "badge b-" + it.kind, KIND_LABEL[it.kind] || it.kind));
    var text = (it.prompt || "").replace(/\s+/g, " ");
    sum.appendChild(marked("span", "snip", text.length > 180 ? text.slice(0, 179) + "…" : text, needle));
    var tags = el("span", "tags");
    (it.tags || []).slice(0, 4).forEach(function (t) { tags.appendChild(el("span", "tag", t)); });
    if (it.kind === "pair" && typeof it.p_chosen === "number") tags.appendChild(el("span", "tag num", "p " + it.p_chosen.toFixed(2)));
    sum.appendChild(tags);
    det.appendChild(sum);
    det.addEventListener("toggle", function () {  // bodies are built on first open: pages stay light
      if (det.open && det.children.length === 1) det.appendChild(body(it, needle));
    });
    return det;
  }

  function filter() {
    var needle = q.value.trim().toLowerCase(), k = kind.value, t = tag.value, s = src.value;
    state.matched = items.filter(function (it) {
      return (!k || it.kind === k) && (!t || (it.tags || []).indexOf(t) !== -1) && (!s || it.src === s) &&
        (!needle || haystack(it).indexOf(needle) !== -1);
    });
    state.needle = needle;
  }

  function draw() {
    var n = state.matched.length, pages = Math.max(1, Math.ceil(n / PAGE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var from = state.page * PAGE, page = state.matched.slice(from, from + PAGE);
    list.textContent = "";
    var frag = document.createDocumentFragment();
    page.forEach(function (it) { frag.appendChild(card(it, state.needle)); });
    list.appendChild(frag);
    if (!n) list.appendChild(el("p", "empty", "No example matches these filters."));
    var count = $("ex-count");
    count.textContent = n ? "Showing " + (from + 1) + "–" + (from + page.length) + " of " + n + " matching (" +
      items.length + " in all)" : "0 of " + items.length + " match";
    count.setAttribute("data-matched", String(n));
    $("ex-page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("ex-open").textContent = "Expand page";
    $("ex-prev").disabled = state.page === 0;
    $("ex-next").disabled = state.page >= pages - 1;
  }

  function writeHash() {
    var p = [];
    [["q", q.value.trim()], ["kind", kind.value], ["tag", tag.value], ["src", src.value]].forEach(function (kv) {
      if (kv[1]) p.push(kv[0] + "=" + encodeURIComponent(kv[1]));
    });
    if (state.page) p.push("page=" + (state.page + 1));
    try { history.replaceState(null, "", "#examples" + (p.length ? "?" + p.join("&") : "")); } catch (e) { /* file: URLs may refuse */ }
  }

  function setSelect(select, value) {
    select.value = value;
    if (select.value !== value) select.value = "";  // an unknown value shows everything, not nothing
  }

  // "#examples?kind=pair&tag=harmless&q=lock" (or "#q=lock") sets the filters: links in the
  // sections above use it, and so can a bookmark.
  function readHash() {
    var raw = location.hash.slice(1), at = raw.indexOf("?");
    var query = at >= 0 ? raw.slice(at + 1) : (raw.indexOf("=") >= 0 ? raw : null);
    if (query === null) return false;
    var params = {};
    query.split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i <= 0) return;
      try { params[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1).replace(/\+/g, " ")); } catch (e) { /* malformed: ignore */ }
    });
    q.value = params.q || "";
    setSelect(kind, params.kind || "");
    setSelect(tag, params.tag || "");
    setSelect(src, params.src || "");
    state.page = (parseInt(params.page, 10) || 1) - 1;
    return true;
  }

  function update(keepPage) {
    if (!keepPage) state.page = 0;
    filter();
    draw();
    writeHash();
  }

  var timer = null;
  q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(function () { update(); }, 120); });
  [kind, tag, src].forEach(function (s) { s.addEventListener("change", function () { update(); }); });
  $("ex-prev").addEventListener("click", function () { state.page--; update(true); list.scrollIntoView(); });
  $("ex-next").addEventListener("click", function () { state.page++; update(true); list.scrollIntoView(); });
  $("ex-open").addEventListener("click", function () {
    var cards = list.querySelectorAll("details.ex"), open = !Array.prototype.every.call(cards, function (c) { return c.open; });
    Array.prototype.forEach.call(cards, function (c) { c.open = open; });
    this.textContent = open ? "Collapse page" : "Expand page";
  });
  window.addEventListener("hashchange", function () {
    if (readHash()) { filter(); draw(); $("examples").scrollIntoView(); }
  });
  var fromHash = readHash();
  filter();
  draw();
  if (fromHash) $("examples").scrollIntoView();
})();
