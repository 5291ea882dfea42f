// The review page's keys: A accepts, R goes to the note of the reject form (Enter there
// rejects), N or the right arrow goes to the next item, the left arrow to the previous one.
// Keys typed into a field are the field's own. Every action is also a button or a link.
(function () {
  "use strict";

  function typing(target) {
    return target && target.closest && target.closest("input, textarea, select, [contenteditable]");
  }

  function follow(selector) {
    const link = document.querySelector(selector);
    if (link) window.location.assign(link.href);
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "a") {
      const form = document.querySelector("[data-review-accept]");
      if (form) { event.preventDefault(); form.requestSubmit(); }
    } else if (key === "r") {
      const note = document.querySelector("[data-review-note]");
      if (note) { event.preventDefault(); note.focus(); }
    } else if (key === "n" || event.key === "ArrowRight") {
      event.preventDefault();
      follow("[data-review-next]");
    } else if (event.key === "ArrowLeft") {
      event.preventDefault();
      follow("[data-review-previous]");
    }
  });
})();
