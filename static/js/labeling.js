// Task pages: keyboard-first ranking, drag to reorder, expand long answers, timing, and
// demonstration drafts kept in this browser as well as on the server. Every form still works
// without this file; it only makes the work faster.
//
// The keys of the rank page do one thing each: J/K (or the arrows) select the next/previous
// answer, 1..K give the selected answer that place and nothing else (the selection stays),
// 0 clears it, Shift+1..7 rates it. The selected answer is the one focused last. I opens
// "Improve this answer" on the answer ranked first, filled with its text to edit.
(function () {
  "use strict";

  const LONG_ANSWER_PX = 240; // as .answer-body.is-collapsed
  let startedAt = Date.now();
  let timedTask = null; // the task startedAt belongs to (a refused submit keeps the clock)
  let selected = null; // the answer the keys act on
  let selectedIndex = 0; // kept across a refused submit, which re-renders the same task

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function typingIn(target) {
    return target.closest("textarea, input[type=text], input[type=email], input[type=password], select, [contenteditable]");
  }

  function openDialog(id) {
    const dialog = document.getElementById(id);
    if (dialog && !dialog.open) {
      dialog.showModal();
      const first = $("input, button, textarea", dialog);
      if (first && id !== "guidelines") first.focus();
    }
  }

  // --- ranking ------------------------------------------------------------------------------

  function rankForm() { return $("#rank-form"); }
  function answers() { return $$(".answer", rankForm() || document); }

  function placeOf(answer) {
    const checked = $("input[type=radio][name^=rank_]:checked", answer);
    return checked ? Number(checked.value) : null;
  }

  function setPlace(answer, place) {
    $$("input[type=radio][name^=rank_]", answer).forEach((input) => {
      input.checked = place !== null && Number(input.value) === place;
    });
    refreshSummary();
  }

  function select(answer) {
    if (selected === answer) return;
    if (selected) selected.classList.remove("is-selected");
    selected = answer;
    if (answer) {
      answer.classList.add("is-selected");
      selectedIndex = Math.max(0, answers().indexOf(answer));
    }
  }

  function selectedAnswer() {
    if (selected && selected.isConnected) return selected;
    return answers()[0] || null;
  }

  // What the folded "Rate or flag" line of an answer says it holds.
  function refreshExtras(answer) {
    const chosen = $("[data-extra-chosen]", answer);
    if (!chosen) return;
    const parts = [];
    const rating = $("input[name^=rating_]:checked", answer);
    if (rating) parts.push(`rated ${rating.value}/7`);
    $$("input[name^=flag_]:checked", answer).forEach((flag) => parts.push(flag.value));
    chosen.textContent = parts.length ? `\u00b7 ${parts.join(", ")}` : "";
  }

  function groups() {
    const byPlace = new Map();
    answers().forEach((answer) => {
      const place = placeOf(answer);
      if (place === null) return;
      if (!byPlace.has(place)) byPlace.set(place, []);
      byPlace.get(place).push(answer);
    });
    return Array.from(byPlace.keys()).sort((a, b) => a - b).map((p) => byPlace.get(p));
  }

  function refreshSummary() {
    const form = rankForm();
    if (!form) return;
    const list = $("#rank-order", form);
    const ranked = groups();
    list.replaceChildren();
    ranked.forEach((group) => {
      const item = document.createElement("li");
      item.className = "rank-chip" + (group.length > 1 ? " rank-tie" : "");
      item.draggable = true;
      item.dataset.completion = group.map((a) => a.dataset.completion).join(",");
      item.textContent = group.map((a) => a.dataset.letter).join(" = ");
      if (group.length > 1) item.title = "A tie: these answers are equally good";
      list.appendChild(item);
    });
    const all = answers();
    const missing = all.filter((a) => placeOf(a) === null).map((a) => a.dataset.letter);
    const notRankable = $("input[name=not_rankable]", form).checked;
    const left = $("[data-missing]", form);
    if (left) left.textContent = missing.length && missing.length < all.length && !notRankable ? `Still to place: ${missing.join(", ")}` : "";
    all.forEach((a) => { a.classList.toggle("is-ranked", placeOf(a) !== null); refreshExtras(a); });
    const hint = $("[data-drag-hint]", form);
    if (hint) hint.hidden = ranked.length < 2;
    refreshRewrite(form, ranked);
  }

  // The rewrite follows the answer ranked first; an untouched copy of the old best answer is
  // swapped for the new one's text.
  function refreshRewrite(form, ranked) {
    const box = $("[data-rewrite]", form);
    if (!box) return;
    const best = ranked && ranked.length ? ranked[0][0] : null;
    const area = $("textarea[name=rewrite_text]", box);
    $("input[name=rewrite_of]", box).value = best ? best.dataset.completion : "";
    $("[data-rewrite-letter]", box).textContent = best ? ` (answer ${best.dataset.letter})` : " (rank the answers first)";
    if (!box.open || !best) return;
    if (area.value === "" || area.value === area.dataset.filled) {
      const original = $(`template[data-original="${best.dataset.completion}"]`, box);
      area.value = area.dataset.filled = original ? original.content.textContent : "";
    }
  }

  function openRewrite(form) {
    const box = $("[data-rewrite]", form);
    if (!box) return;
    box.open = true;
    refreshRewrite(form, groups());
    $("textarea[name=rewrite_text]", box).focus();
  }

  function focusAnswer(step) {
    const all = answers();
    if (!all.length) return;
    const current = document.activeElement && document.activeElement.closest(".answer");
    const from = current || selectedAnswer();
    let index = from ? all.indexOf(from) + step : 0;
    index = Math.max(0, Math.min(all.length - 1, index));
    all[index].focus();
    all[index].scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function setupCollapsing(root) {
    $$(".answer", root).forEach((answer) => {
      const body = $(".answer-body", answer);
      const toggle = $(".answer-toggle", answer);
      if (!body || !toggle) return;
      if (body.scrollHeight > LONG_ANSWER_PX + 40) {
        body.classList.add("is-collapsed");
        toggle.hidden = false;
      }
      toggle.addEventListener("click", () => toggleAnswer(answer));
    });
  }

  function toggleAnswer(answer) {
    const body = $(".answer-body", answer);
    const toggle = $(".answer-toggle", answer);
    if (!body || !toggle || toggle.hidden) return;
    const collapsed = body.classList.toggle("is-collapsed");
    toggle.textContent = collapsed ? "Show the whole answer" : "Show less";
    toggle.setAttribute("aria-expanded", String(!collapsed));
  }

  function setupDragging(form) {
    const list = $("#rank-order", form);
    let dragged = null;
    list.addEventListener("dragstart", (event) => {
      dragged = event.target.closest(".rank-chip");
      if (dragged) event.dataTransfer.effectAllowed = "move";
    });
    list.addEventListener("dragover", (event) => {
      if (!dragged) return;
      event.preventDefault();
      const over = event.target.closest(".rank-chip");
      if (over && over !== dragged) {
        const box = over.getBoundingClientRect();
        const before = event.clientX < box.left + box.width / 2;
        list.insertBefore(dragged, before ? over : over.nextSibling);
      }
    });
    list.addEventListener("drop", (event) => {
      event.preventDefault();
      // The new order, chip by chip, becomes places 1, 2, 3...; a tie is one chip and keeps
      // its answers together.
      let place = 1;
      $$(".rank-chip", list).forEach((chip) => {
        chip.dataset.completion.split(",").forEach((id) => {
          const answer = $(`.answer[data-completion="${id}"]`, form);
          $$("input[type=radio][name^=rank_]", answer).forEach((input) => {
            input.checked = Number(input.value) === place;
          });
        });
        place += 1;
      });
      dragged = null;
      refreshSummary();
    });
    list.addEventListener("dragend", () => { dragged = null; refreshSummary(); });
  }

  function startClock(form) {
    if (timedTask === form.dataset.task) return;
    timedTask = form.dataset.task;
    startedAt = Date.now();
    selectedIndex = 0;
  }

  function initRanking(root) {
    const form = $("#rank-form", root) || rankForm();
    if (!form || form.dataset.ready) return;
    form.dataset.ready = "1";
    startClock(form);
    setupCollapsing(form);
    setupDragging(form);
    form.addEventListener("change", refreshSummary);
    const rewrite = $("[data-rewrite]", form);
    if (rewrite) rewrite.addEventListener("toggle", () => refreshRewrite(form, groups()));
    form.addEventListener("focusin", (event) => {
      const answer = event.target.closest(".answer");
      if (answer) select(answer);
    });
    selected = null;
    const start = answers()[Math.min(selectedIndex, answers().length - 1)];
    select(start || null);
    refreshSummary();
    if (start && !document.activeElement.closest("dialog")) start.focus({ preventScroll: true });
  }

  function rankingKeys(event) {
    const form = rankForm();
    if (!form) return false;
    const k = Number(form.dataset.k);
    const answer = selectedAnswer();
    const digit = /^(?:Digit|Numpad)([0-9])$/.exec(event.code);
    if (digit && answer && !event.ctrlKey && !event.metaKey && !event.altKey) {
      const n = Number(digit[1]);
      if (event.shiftKey) {
        const rating = $(`input[name^=rating_][value="${n}"]`, answer);
        if (rating) { rating.checked = true; refreshExtras(answer); return true; }
        return false;
      }
      if (n === 0) { setPlace(answer, null); return true; }
      if (n <= k) { setPlace(answer, n); return true; }
      return false;
    }
    switch (event.key.length === 1 ? event.key.toLowerCase() : event.key) {
      case "j": case "ArrowDown": focusAnswer(1); return true;
      case "k": case "ArrowUp": focusAnswer(-1); return true;
      case "e": if (answer) toggleAnswer(answer); return true;
      case "i": openRewrite(form); return true;
      case "n": {
        const box = $("input[name=not_rankable]", form);
        box.checked = !box.checked;
        refreshSummary();
        return true;
      }
      default: return false;
    }
  }

  // --- demonstrations -----------------------------------------------------------------------

  function draftKey(form) { return `rlhf-draft-${form.dataset.task}`; }

  function initDemonstration(root) {
    const form = $("#demo-form", root) || $("#demo-form");
    if (!form || form.dataset.ready) return;
    form.dataset.ready = "1";
    startClock(form);
    const area = $("#demo-text", form);
    const count = $("#char-count", form);
    const local = JSON.parse(localStorage.getItem(draftKey(form)) || "null");
    const serverAt = form.dataset.savedAt ? Date.parse(form.dataset.savedAt) : 0;
    if (local && local.text && local.text !== area.value && local.at > serverAt) {
      // Typed here but not yet on the server (offline, or the tab closed): bring it back and
      // save it on the server now, not at the next keystroke.
      area.value = local.text;
      $("#draft-status", form).textContent = "Restored your unsaved text from this browser; saving it…";
      if (window.htmx) {
        window.htmx.ajax("POST", area.getAttribute("hx-post"), { source: area, target: "#draft-status", swap: "innerHTML" });
      }
    }
    const update = () => {
      count.textContent = `${area.value.length.toLocaleString()} characters`;
      localStorage.setItem(draftKey(form), JSON.stringify({ text: area.value, at: Date.now() }));
    };
    area.addEventListener("input", update);
    count.textContent = `${area.value.length.toLocaleString()} characters`;
    area.focus({ preventScroll: true });
  }

  // --- wiring -------------------------------------------------------------------------------

  function init(root) {
    initRanking(root);
    initDemonstration(root);
  }

  document.addEventListener("DOMContentLoaded", () => init(document));
  document.addEventListener("htmx:afterSettle", (event) => init(event.target));

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const seconds = $("input[name=seconds_spent]", form);
    if (seconds) seconds.value = ((Date.now() - startedAt) / 1000).toFixed(1);
    // A closed editor, or the best answer's text left as it was, sends no rewrite (the form
    // values are read as this event is handled; the field is back right after).
    const box = $("[data-rewrite]", form);
    const area = box && $("textarea[name=rewrite_text]", box);
    if (area && (!box.open || area.value === area.dataset.filled)) {
      area.disabled = true;
      setTimeout(() => { area.disabled = false; }, 0);
    }
  }, true);

  document.addEventListener("htmx:afterRequest", (event) => {
    // A submitted demonstration no longer needs its copy in this browser.
    const form = event.detail.elt;
    const stored = event.detail.successful && event.detail.xhr.status < 300;
    if (form && form.id === "demo-form" && stored) localStorage.removeItem(draftKey(form));
  });

  // The shortcut list is a popover: Esc, a click elsewhere or a shortcut closes it.
  function closeShortcuts() {
    $$("details.shortcuts[open]").forEach((details) => { details.open = false; });
  }

  document.addEventListener("click", (event) => {
    if (!event.target.closest("details.shortcuts")) closeShortcuts();
    if (event.target.closest("[data-open-skip]")) { event.preventDefault(); openDialog("skip-dialog"); }
    if (event.target.closest("[data-open-guidelines]") && $("#guidelines")) { event.preventDefault(); openDialog("guidelines"); }
    const close = event.target.closest("[data-close-dialog]");
    if (close) close.closest("dialog").close();
  });

  document.addEventListener("keydown", (event) => {
    if ($("dialog[open]")) return; // the dialog handles its own keys (Esc closes it)
    if ($("details.shortcuts[open]") && !event.ctrlKey && !event.metaKey) {
      closeShortcuts();
      if (event.key === "Escape") { event.preventDefault(); return; }
    }
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      // Always sent: the server says what is missing (in the form's alert region).
      const form = rankForm() || $("#demo-form");
      const submit = form && $("[data-submit]", form);
      if (submit) { event.preventDefault(); form.requestSubmit(submit); }
      return;
    }
    if (typingIn(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "?") { event.preventDefault(); openDialog("guidelines"); return; }
    if (event.key.toLowerCase() === "s" && $("#skip-dialog")) { event.preventDefault(); openDialog("skip-dialog"); return; }
    if (rankingKeys(event)) event.preventDefault();
  });
})();
