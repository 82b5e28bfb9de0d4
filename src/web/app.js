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

// A pending request's deadline, counted down: "2026-12-07 17:58 UTC (in 12 min 5 s)".
(function countdowns() {
  const clocks = Array.from(document.querySelectorAll("time[data-countdown]"));
  if (clocks.length === 0) {
    return;
  }
  const tick = () => {
    for (const clock of clocks) {
      const left = Math.round((Date.parse(clock.dateTime) - Date.now()) / 1000);
      const at = clock.dataset.at || (clock.dataset.at = clock.textContent);
      if (left <= 0) {
        clock.textContent = `${at} (expired)`;
        continue;
      }
      const minutes = Math.floor(left / 60);
      const spelled = minutes > 0 ? `${minutes} min ${left % 60} s` : `${left} s`;
      clock.textContent = `${at} (in ${spelled})`;
    }
  };
  tick();
  window.setInterval(tick, 1000);
})();

// In a command, Tab types a tab, as in an editor; Escape, then Tab, moves focus on as usual.
(function tabs() {
  for (const area of document.querySelectorAll("textarea.command")) {
    let leaving = false;
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        leaving = true;
        return;
      }
      if (event.key !== "Tab" || event.shiftKey || leaving) {
        leaving = false;
        return;
      }
      event.preventDefault();
      const { selectionStart: start, selectionEnd: end, value } = area;
      area.value = `${value.slice(0, start)}\t${value.slice(end)}`;
      area.selectionStart = area.selectionEnd = start + 1;
    });
  }
})();
