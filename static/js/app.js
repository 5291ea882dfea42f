// Small progressive enhancements; every page works without them.
//
// Errors of in-page (htmx) actions are never silent. A fragment the server rendered for a
// refused action (it sends X-Error-Fragment) replaces its target like a success would: it
// carries its own role="alert" message and the values sent. Any other failure (403, 5xx, a
// network error) writes its message into the role="alert" region of the form where the user
// acted, made on the spot when the form has none. Either way, stale success banners go.
(function () {
  "use strict";

  function clearSuccess() {
    document.querySelectorAll(".toast").forEach((toast) => toast.remove());
  }

  function scopeOf(elt) {
    return (elt && elt.closest && elt.closest("form")) || elt || document.body;
  }

  function regionFor(elt, create) {
    const scope = scopeOf(elt);
    let region = scope.querySelector("[data-alert]");
    if (!region && scope.previousElementSibling && scope.previousElementSibling.matches("[data-alert]")) {
      region = scope.previousElementSibling;
    }
    if (!region && create) {
      region = document.createElement("div");
      region.className = "alert alert-error";
      region.setAttribute("role", "alert");
      region.dataset.alert = "";
      if (scope.tagName === "FORM") scope.prepend(region);
      else scope.before(region);
    }
    return region;
  }

  function showError(elt, message) {
    clearSuccess();
    const region = regionFor(elt, true);
    region.textContent = message;
    region.scrollIntoView({ block: "nearest" });
  }

  // The reason a response gives: an error page's message, or a JSON API's "detail".
  function reasonOf(xhr) {
    const type = xhr.getResponseHeader("Content-Type") || "";
    try {
      if (type.includes("json")) {
        const detail = JSON.parse(xhr.responseText).detail;
        if (typeof detail === "string") return detail;
        if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
      } else if (type.includes("html")) {
        const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        const message = doc.querySelector("[data-error-message]");
        if (message && message.textContent.trim()) return message.textContent.trim();
      }
    } catch (ignored) {
      // Not readable: fall back to the status below.
    }
    return null;
  }

  function messageFor(xhr) {
    const reason = reasonOf(xhr);
    if (xhr.status >= 500) {
      return `The server had a problem with that request (${xhr.status}). What you entered is still here; try again in a moment.`;
    }
    if (reason) return reason;
    if (xhr.status === 403) {
      return "This action was refused: your session or form may have expired. Reload the page and try again.";
    }
    if (xhr.status === 413) return "That is too large to send.";
    return `That did not work (${xhr.status}). Reload the page and try again.`;
  }

  document.addEventListener("htmx:beforeSwap", (event) => {
    const detail = event.detail;
    if (detail.xhr.status >= 400 && detail.xhr.getResponseHeader("X-Error-Fragment")) {
      detail.shouldSwap = true;
      detail.isError = false;
      clearSuccess();
    }
  });

  document.addEventListener("htmx:afterSettle", (event) => {
    const xhr = event.detail.xhr;
    if (!xhr || !xhr.getResponseHeader("X-Error-Fragment")) return;
    const alert = event.detail.target.querySelector("[data-alert]:not(:empty)");
    if (alert) alert.scrollIntoView({ block: "center" });
  });

  document.addEventListener("htmx:responseError", (event) => {
    showError(event.detail.elt, messageFor(event.detail.xhr));
  });

  document.addEventListener("htmx:sendError", (event) => {
    showError(event.detail.elt, "The server cannot be reached. Check your connection; what you entered is still here.");
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    if (!event.detail.successful || event.detail.xhr.status >= 400) return;
    const region = regionFor(event.detail.elt, false);
    if (region && region.isConnected) region.textContent = "";
  });
})();
