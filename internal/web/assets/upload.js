// upgrade-server: sending a dump from the browser to the v1 API, with
// progress (percent, bytes, rate, time left), cancel and retry. Used by
// the upgrade form and by a draft request's status page.
"use strict";
window.Upgrade = (function () {
  var U = {};

  // bytes is a size for people, as the server writes it ("23.2 KiB").
  U.bytes = function (n) {
    if (n < 1024) return n === 1 ? "1 byte" : n + " bytes";
    var units = ["KiB", "MiB", "GiB", "TiB", "PiB"], v = n / 1024, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (v >= 100 || v === Math.floor(v) ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  };

  // left is a remaining time for people.
  U.left = function (s) {
    if (!isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    if (s < 60) return "about " + s + " s left";
    if (s < 3600) return "about " + Math.round(s / 60) + " min left";
    return "about " + Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min left";
  };

  // call POSTs to a v1 method and gives its answer ({failures, request}).
  U.call = function (url, body) {
    var init = { method: "POST", headers: { "Accept": "application/json" }, cache: "no-store" };
    if (body) {
      init.body = body;
      init.headers["Content-Type"] = "application/x-www-form-urlencoded";
    }
    return fetch(url, init).then(function (r) {
      return r.json().catch(function () { throw new Error("The server answered HTTP " + r.status + "."); });
    });
  };

  // send PUTs file to url, reporting progress; it returns {cancel}.
  function send(url, file, on) {
    var xhr = new XMLHttpRequest(), samples = [];
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      var now = performance.now(), total = e.lengthComputable ? e.total : file.size;
      samples.push([now, e.loaded]);
      while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
      var rate = 0;
      if (samples.length > 1 && now > samples[0][0]) rate = (e.loaded - samples[0][1]) * 1000 / (now - samples[0][0]);
      on.progress(e.loaded, total, rate);
    };
    xhr.onload = function () {
      var a = null;
      try { a = JSON.parse(xhr.responseText); } catch (err) { a = null; }
      if (!a) on.failed("server", "The server answered HTTP " + xhr.status + ".");
      else if (a.failures && a.failures.length) on.failed("refused", a.failures.map(function (f) { return f.message; }).join(" "));
      else on.done(a);
    };
    xhr.onerror = function () { on.failed("network", "The connection dropped during the upload."); };
    xhr.onabort = function () { on.failed("cancelled", "The upload was cancelled."); };
    xhr.send(file);
    return { cancel: function () { xhr.abort(); } };
  }

  function el(id) { return document.getElementById(id); }

  // run uploads file to uploadURL with the progress block of the page
  // (#upload and its parts), then calls process and hands its answer to
  // processed. Cancel, a dropped connection or a refusal say so and offer
  // to try again; the request stays a draft meanwhile.
  U.run = function (file, uploadURL, processURL, processed, statusPath) {
    var box = el("upload"), bar = el("upload-bar"), pct = el("upload-percent"), detail = el("upload-detail"),
      said = el("upload-said"), problem = el("upload-problem"), cancel = el("upload-cancel"), retry = el("upload-retry"),
      pageLink = el("upload-page"), job = null, uploaded = false;
    var name = el("upload-name");
    if (name) name.textContent = file.name;
    box.hidden = false;

    function show(loaded, total, rate) {
      var p = total > 0 ? Math.floor(loaded * 100 / total) : 0;
      bar.value = p;
      pct.textContent = p + " %";
      var parts = [U.bytes(loaded) + " of " + U.bytes(total)];
      if (rate > 0) {
        parts.push(U.bytes(Math.round(rate)) + "/s");
        if (loaded < total) parts.push(U.left((total - loaded) / rate));
      }
      detail.textContent = "· " + parts.join(" · ");
    }
    function trouble(text, offerRetry) {
      problem.textContent = text;
      problem.hidden = false;
      cancel.hidden = true;
      retry.hidden = !offerRetry;
      if (pageLink && statusPath) { pageLink.href = statusPath; pageLink.hidden = false; }
      if (offerRetry) retry.focus();
    }
    function process() {
      said.textContent = "Upload complete. Starting the upgrade…";
      U.call(processURL).then(function (a) {
        if (a.failures && a.failures.length) {
          trouble("The upgrade could not start: " + a.failures.map(function (f) { return f.message; }).join(" "), true);
          return;
        }
        said.textContent = "The upgrade has started.";
        processed(a);
      }).catch(function () {
        trouble("The connection dropped while starting the upgrade. The dump is uploaded: try again.", true);
      });
    }
    // While bytes are on their way, leaving the page asks first: it would
    // end the upload (nothing is kept; the request stays a draft).
    function leaving(e) { e.preventDefault(); e.returnValue = ""; }
    function sending(on) {
      if (on) window.addEventListener("beforeunload", leaving);
      else window.removeEventListener("beforeunload", leaving);
    }
    function start() {
      problem.hidden = true;
      retry.hidden = true;
      if (pageLink) pageLink.hidden = true;
      if (uploaded) { process(); return; }
      cancel.hidden = false;
      cancel.focus();
      said.textContent = "Uploading…";
      show(0, file.size, 0);
      sending(true);
      job = send(uploadURL, file, {
        progress: show,
        done: function () {
          sending(false);
          uploaded = true;
          cancel.hidden = true;
          show(file.size, file.size, 0);
          process();
        },
        failed: function (kind, message) {
          sending(false);
          job = null;
          said.textContent = "";
          var draft = " Nothing was kept; the request stays a draft and can be uploaded again.";
          if (kind === "network") trouble(message + draft + " Check the connection and try again.", true);
          else if (kind === "cancelled") trouble(message + draft, true);
          else trouble("The upload was refused: " + message, true);
        }
      });
    }
    cancel.onclick = function () { if (job) job.cancel(); };
    retry.onclick = start;
    start();
  };

  // fileProblem says what is wrong with a chosen file before anything is
  // sent: none, empty, or over the server's limit (max bytes; 0: none).
  U.fileProblem = function (file, max) {
    if (!file) return "Choose the dump file to upload.";
    if (file.size === 0) return "This file is empty: choose the dump itself.";
    if (max > 0 && file.size > max) {
      return "This file is " + U.bytes(file.size) + "; this server takes files up to " + U.bytes(max) + ". Nothing was sent.";
    }
    return "";
  };

  // dropZone lets a file be dropped on zone, as if chosen with input.
  U.dropZone = function (zone, input, chosen) {
    if (!zone) return;
    zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        chosen();
      }
    });
    input.addEventListener("change", chosen);
  };

  // fieldError shows (or, with "", hides) the error of a form field.
  U.fieldError = function (name, text) {
    var p = el(name + "-error");
    if (!p) return;
    p.textContent = text;
    p.hidden = !text;
    var inputs = name === "aim" ? document.querySelectorAll("input[name=aim]") : [el(name)];
    Array.prototype.forEach.call(inputs, function (i) {
      if (!i) return;
      if (text) i.setAttribute("aria-invalid", "true"); else i.removeAttribute("aria-invalid");
    });
  };

  return U;
})();
