// vfido ui: keeps the server-rendered sections live (server-sent events) and sends the
// forms without reloading the page. Without JavaScript, every form still works.
"use strict";

(() => {
  const sections = ["key", "pending", "credentials", "switches", "log", "lint"];
  const notice = document.getElementById("notice");
  const announcer = document.getElementById("announcer");
  const connection = document.getElementById("connection");
  const baseTitle = document.title;
  let announced = new Set();

  document.documentElement.classList.add("js");

  let noticeTimer = 0;
  function say(text, isError) {
    notice.textContent = text;
    notice.classList.toggle("error", !!isError);
    clearTimeout(noticeTimer);
    if (!isError) noticeTimer = setTimeout(() => { notice.textContent = ""; }, 10000);
  }

  // A selector that finds the "same" element after a section is re-rendered.
  function focusKey(el) {
    if (el.id) return "#" + CSS.escape(el.id);
    if (el.dataset && el.dataset.key) return '[data-key="' + CSS.escape(el.dataset.key) + '"]';
    return null;
  }

  function replace(name, html) {
    const box = document.getElementById("section-" + name);
    if (!box || box.innerHTML === html) return;
    const active = document.activeElement;
    const key = active && box.contains(active) ? focusKey(active) : null;
    const open = Array.from(box.querySelectorAll("details[open][data-key]"),
      (d) => d.dataset.key);
    box.innerHTML = html;
    for (const k of open) {
      const d = box.querySelector('details[data-key="' + CSS.escape(k) + '"]');
      if (d) d.open = true;
    }
    if (key) {
      // Keep the keyboard where it was; if that control is gone (an answered request, a
      // deleted credential), stay in the section: its heading takes the focus.
      const again = box.querySelector(key);
      const heading = box.parentElement && box.parentElement.querySelector("h2");
      if (again) again.focus();
      else if (heading) heading.focus();
    } else if (active && active !== document.body && !document.contains(active)) {
      const heading = box.parentElement && box.parentElement.querySelector("h2");
      if (heading) heading.focus();
    }
    if (name === "pending") {
      pendingChanged(box);
      countdown();
    }
  }

  function pendingChanged(box) {
    const requests = box.querySelectorAll("[data-pending-id]");
    document.title = requests.length ? "(" + requests.length + ") " + baseTitle : baseTitle;
    const now = new Set();
    for (const r of requests) {
      now.add(r.dataset.pendingId);
      if (!announced.has(r.dataset.pendingId)) {
        const heading = r.querySelector("h3");
        announcer.textContent = "Request waiting: " + (heading ? heading.textContent : "");
      }
    }
    announced = now;
  }

  let live = false;

  async function refreshAll() {
    for (const name of sections) {
      try {
        const response = await fetch("section/" + name, {credentials: "same-origin"});
        if (response.ok) replace(name, await response.text());
      } catch (e) {
        // the next server-sent event will bring it
      }
    }
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const submitter = event.submitter;
    const action = submitter && submitter.hasAttribute("formaction")
      ? submitter.formAction : form.action;
    const body = new URLSearchParams(new FormData(form, submitter || undefined));
    // No second submission while this one runs (buttons are not disabled: a disabled
    // button loses the keyboard focus).
    if (form.getAttribute("aria-busy") === "true") return;
    form.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(action, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: {"Accept": "application/json"},
      });
      const answer = await response.json();
      say(answer.message, !answer.ok);
    } catch (e) {
      say("The dashboard did not answer: " + e, true);
    } finally {
      form.removeAttribute("aria-busy");
      // Live, the server pushes what changed; a fetch here could arrive after a newer push
      // and show older state. Without the stream, fetch every section.
      if (!live) refreshAll();
    }
  });

  // Switches apply at once.
  document.addEventListener("change", (event) => {
    const form = event.target.form;
    if (form && form.hasAttribute("data-autosubmit")) form.requestSubmit();
  });

  // Count the seconds left of a pending request down between updates.
  function countdown() {
    for (const el of document.querySelectorAll("[data-deadline]")) {
      const left = Math.max(0, Math.round((parseInt(el.dataset.deadline, 10) - Date.now()) / 1000));
      el.textContent = " (" + left + " s left)";
    }
  }
  setInterval(countdown, 1000);

  if (window.EventSource) {
    const source = new EventSource("events");
    source.addEventListener("section", (event) => {
      const data = JSON.parse(event.data);
      replace(data.section, data.html);
    });
    source.onopen = () => {
      live = true;
      connection.textContent = "Live";
      connection.className = "connection live";
    };
    source.onerror = () => {
      live = false;
      connection.textContent = "Reconnecting to the dashboard\u2026";
      connection.className = "connection down";
    };
  }
  pendingChanged(document.getElementById("section-pending"));
  countdown();
})();
