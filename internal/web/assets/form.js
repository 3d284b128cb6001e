// upgrade-server: the upgrade form. It creates the request through the v1
// API (the server's own checks, each refusal shown next to its field in
// the server's words), uploads the file from the browser with progress,
// calls process and lands on the request's status page.
"use strict";
(function (U) {
  var form = document.getElementById("upgrade");
  if (!form) return;
  var words = JSON.parse(document.getElementById("words").textContent);
  var base = form.dataset.base || "", max = Number(form.dataset.max) || 0;
  var input = document.getElementById("dump"), submit = document.getElementById("submit");
  var general = document.getElementById("form-error");
  var fields = ["contract", "email", "target", "aim", "dump"];

  function explain(f) {
    var param = f.param || "";
    var field = words.fields[f.reason] || words.params[param] || "";
    var text = words.words[f.reason + " " + param] || words.words[f.reason];
    if (!text) return [field, f.message];
    if (text.indexOf("{detail}") >= 0) {
      var m = f.message, i = m.lastIndexOf('": '), d;
      if (i >= 0) d = m.slice(i + 3);
      else if ((i = m.indexOf(": ")) >= 0) d = m.slice(i + 2);
      else d = m;
      text = text.replace("{detail}", d.replace(/\.$/, ""));
    }
    return [field, text];
  }

  function clear() {
    fields.forEach(function (f) { U.fieldError(f, ""); });
    general.hidden = true;
    general.textContent = "";
  }
  function say(text) {
    var p = document.createElement("p");
    p.textContent = text;
    general.appendChild(p);
    general.hidden = false;
  }
  function focusFirst() {
    for (var i = 0; i < fields.length; i++) {
      var p = document.getElementById(fields[i] + "-error");
      if (p && !p.hidden) {
        var target = fields[i] === "aim" ? document.querySelector("input[name=aim]") : document.getElementById(fields[i]);
        if (target) target.focus();
        return;
      }
    }
    general.focus();
  }
  function checkFile() {
    var problem = U.fileProblem(input.files[0], max);
    U.fieldError("dump", problem);
    return !problem;
  }
  function lock(on) {
    Array.prototype.forEach.call(form.elements, function (e) { e.disabled = on; });
  }

  U.dropZone(document.getElementById("drop"), input, checkFile);

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    clear();
    var file = input.files[0];
    if (!checkFile()) { input.focus(); return; }
    var aim = form.querySelector("input[name=aim]:checked");
    var body = new URLSearchParams();
    // (form.target is the form's own target attribute: read fields by id.)
    ["contract", "email", "target"].forEach(function (f) { body.set(f, document.getElementById(f).value); });
    body.set("aim", aim ? aim.value : "");
    body.set("filename", file.name);
    lock(true);
    U.call(base + "/database/v1/create", body).then(function (a) {
      if (a.failures && a.failures.length) {
        lock(false);
        a.failures.forEach(function (f) {
          var x = explain(f), p = x[0] && document.getElementById(x[0] + "-error");
          if (p && p.hidden) U.fieldError(x[0], x[1]);
          else if (!p) say(x[1]);
        });
        focusFirst();
        return;
      }
      var req = a.request, auth = "request=" + req.id + "&key=" + encodeURIComponent(req.key);
      var statusPath = new URL(req.status_url, location.href).pathname;
      U.run(file, base + "/database/v1/upload?" + auth, base + "/database/v1/process?" + auth, function () {
        location.assign(statusPath);
      }, statusPath);
    }).catch(function () {
      lock(false);
      say("The server could not be reached; nothing was created. Check the connection and send the form again.");
      submit.focus();
    });
  });
})(window.Upgrade);
