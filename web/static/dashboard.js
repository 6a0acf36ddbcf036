// The dashboard's only script (no framework, no build). Live updates: every two seconds the
// page's #live block is fetched again (?partial=1) and swapped in, keeping ticked boxes and
// opened tracebacks; the header button pauses and resumes, remembered per browser. Also:
// confirmation prompts (data-confirm), "select all" boxes and selects that submit their form.
(function () {
  "use strict";
  var INTERVAL = 2000;
  var KEY = "jobqueue.live.paused";
  var live = document.getElementById("live");
  var toggle = document.getElementById("live-toggle");
  var status = document.getElementById("live-status");
  var paused = localStorage.getItem(KEY) === "1";
  var busy = false;

  function say(text) { if (status) status.textContent = text; }

  function showPaused() {
    document.body.classList.toggle("paused", paused);
    if (toggle) {
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      toggle.setAttribute("aria-pressed", String(paused));
    }
    say(paused ? "Paused" : "Live");
  }

  function swap(html) {
    var ticked = {};
    live.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
      ticked[box.name + "=" + box.value] = true;
    });
    var open = [];
    live.querySelectorAll("details[open][id]").forEach(function (d) { open.push(d.id); });
    live.innerHTML = html;
    live.querySelectorAll("input[type=checkbox]").forEach(function (box) {
      if (ticked[box.name + "=" + box.value]) box.checked = true;
    });
    open.forEach(function (id) {
      var d = document.getElementById(id);
      if (d) d.open = true;
    });
  }

  function refresh() {
    if (paused || busy || document.hidden) return;
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login?next=" +
            encodeURIComponent(window.location.pathname + window.location.search));
          return null;
        }
        if (!response.ok) {
          say("Update failed (" + response.status + "), retrying");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || paused) return;
        swap(html);
        say("Live · " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("Server unreachable, retrying"); })
      .then(function () { busy = false; });
  }

  if (live && live.hasAttribute("data-refresh") && toggle) {
    showPaused();
    toggle.addEventListener("click", function () {
      paused = !paused;
      localStorage.setItem(KEY, paused ? "1" : "0");
      showPaused();
      if (!paused) refresh();
    });
    window.setInterval(refresh, INTERVAL);
  } else if (toggle) {  // a page that stays as loaded (a confirmation): nothing to pause
    toggle.hidden = true;
    if (status) status.hidden = true;
  }

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("[data-select-all]")) {
      document.querySelectorAll("input[type=checkbox][name=ids]").forEach(function (box) {
        box.checked = target.checked;
      });
    } else if (target.matches("[data-autosubmit]")) {
      target.form.submit();
    }
  });
})();
