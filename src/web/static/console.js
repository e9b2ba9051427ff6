// promised web console: live updates without a reload. Polls the state directory's
// fingerprint; when a pass changed it, fetches this page again and swaps its <main>.
(function () {
  "use strict";
  var current = document.body.dataset.version;
  var live = document.getElementById("live");
  function say(text) { if (live) { live.textContent = text; } }
  async function tick() {
    try {
      var r = await fetch("/api/v1/console/version", { cache: "no-store", credentials: "same-origin" });
      if (r.ok) {
        var v = (await r.json()).version;
        if (v !== current) {
          var page = await fetch(location.href, { cache: "no-store", credentials: "same-origin" });
          if (page.ok) {
            var doc = new DOMParser().parseFromString(await page.text(), "text/html");
            var fresh = doc.querySelector("main");
            var old = document.querySelector("main");
            if (fresh && old) { old.replaceWith(fresh); }
            current = doc.body.dataset.version || v;
            document.body.dataset.version = current;
            say("updated " + new Date().toLocaleTimeString());
          }
        } else {
          say("live");
        }
      }
    } catch (e) {
      say("offline: retrying");
    }
    setTimeout(tick, 2000);
  }
  setTimeout(tick, 2000);
})();
