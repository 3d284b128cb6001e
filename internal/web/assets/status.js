// upgrade-server: a request's status page, kept live. It polls the
// status.json beside the page while the request can still change, and
// updates the state, progress, files, details and log in place.
"use strict";
(function (U) {
  var root = document.getElementById("status");
  if (!root) return;
  var url = root.dataset.json, after = Number(root.dataset.after) || 0, poll = Number(root.dataset.poll) || 3000;
  var active = root.hasAttribute("data-active"), timer = null, misses = 0, lastFiles = null;
  function el(id) { return document.getElementById(id); }
  var live = el("live");

  function text(id, s) { var e = el(id); if (e && e.textContent !== s) e.textContent = s; }

  function apply(v) {
    var state = el("state");
    if (state.textContent !== v.state) { state.textContent = v.state; state.className = "state " + v.state; }
    text("label", v.label + ".");
    text("explain-text", v.explain);
    document.title = "Request " + v.id + ": " + v.label + " · upgrade-server";
    el("message").hidden = !v.message;
    text("message-text", v.message);

    var pr = el("progress");
    pr.hidden = !v.progress;
    if (v.progress) {
      el("progress-bar").value = v.progress.percent;
      text("progress-text", v.progress.text);
    }

    var files = JSON.stringify(v.files);
    if (files !== lastFiles) {
      lastFiles = files;
      var ul = el("files");
      ul.textContent = "";
      var notes = "";
      v.files.forEach(function (f) {
        var li = document.createElement("li"), a = document.createElement("a"), hint = document.createElement("span");
        a.className = f.main ? "button" : "button secondary";
        a.href = f.url;
        a.setAttribute("download", f.name);
        a.textContent = f.label;
        hint.className = "hint";
        hint.textContent = f.name;
        li.appendChild(a);
        li.appendChild(document.createTextNode(" "));
        li.appendChild(hint);
        ul.appendChild(li);
        if (/\/upgraded\/notes$/.test(f.url)) notes = f.url;
      });
      el("no-files").hidden = v.files.length > 0;
      el("notes").hidden = !notes;
      if (notes) el("notes-link").href = notes;
    }

    Array.prototype.forEach.call(document.querySelectorAll(".only-draft"), function (e) { e.hidden = !v.draft; });
    var now = el("process-now");
    if (now) now.hidden = !v.uploaded;

    var dl = el("facts"), fresh = document.createDocumentFragment();
    v.facts.forEach(function (f) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = f.label;
      dd.textContent = f.value;
      fresh.appendChild(dt);
      fresh.appendChild(dd);
    });
    dl.textContent = "";
    dl.appendChild(fresh);

    if (v.log.length) {
      var log = el("log"), atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      v.log.forEach(function (l) {
        if (l.id <= after) return;
        var d = document.createElement("div");
        d.className = l.level;
        d.textContent = l.at + "  " + l.message;
        log.appendChild(d);
      });
      el("no-log").hidden = true;
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
    after = Math.max(after, v.after);
    poll = v.poll_ms || poll;
    active = v.active;
    if (!active) live.textContent = "";
  }

  function tick() {
    clearTimeout(timer);
    fetch(url + "?after=" + after, { headers: { "Accept": "application/json" }, cache: "no-store" }).then(function (r) {
      if (r.status === 404) { active = false; live.textContent = "This request no longer exists."; return null; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (v) {
      if (v) apply(v);
      if (misses) live.textContent = active ? "This page follows the request as it moves." : "";
      misses = 0;
    }).catch(function () {
      misses++;
      live.textContent = "The server cannot be reached; trying again…";
    }).then(function () {
      if (active) timer = setTimeout(tick, misses ? Math.min(poll * Math.pow(2, misses), 30000) : poll);
    });
  }
  if (active) timer = setTimeout(tick, poll);

  // A draft: upload from this browser, or start the upgrade of a dump
  // uploaded elsewhere.
  var form = el("upload-form");
  if (form) {
    var input = el("dump"), max = Number(form.dataset.max) || 0;
    var check = function () { var p = U.fileProblem(input.files[0], max); U.fieldError("dump", p); return !p; };
    U.dropZone(el("drop"), input, check);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!check()) { input.focus(); return; }
      form.hidden = true;
      U.run(input.files[0], form.dataset.upload, form.dataset.process, function () {
        el("upload").hidden = true;
        active = true;
        tick();
      });
    });
  }
  var start = el("process");
  if (start) {
    start.addEventListener("click", function () {
      start.disabled = true;
      U.call(start.dataset.process).then(function (a) {
        start.disabled = false;
        if (a.failures && a.failures.length) { live.textContent = a.failures.map(function (f) { return f.message; }).join(" "); return; }
        active = true;
        tick();
      }).catch(function () { start.disabled = false; live.textContent = "The server cannot be reached; try again."; });
    });
  }
})(window.Upgrade);
