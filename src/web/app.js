// hoopbot's web app, enhanced: a request page reloads when its request changes anywhere (the
// server's /access-requests/{id}/events stream). Pages work without this file.
"use strict";

(function live() {
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) {
    return;
  }
  const events = new EventSource(main.dataset.live);
  events.addEventListener("changed", () => {
    const reason = document.getElementById("reason");
    if (reason && reason.value.trim() !== "") {
      // Someone is typing a reason: say so rather than lose what they typed.
      const note = document.getElementById("changed");
      if (note) {
        note.hidden = false;
      }
      return;
    }
    events.close();
    window.location.reload();
  });
})();
