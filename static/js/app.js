// Small progressive enhancements; every page works without them.
// When an htmx request fails, say so in the notice bar instead of failing silently.
(function () {
  function notify(message) {
    const bar = document.getElementById("notice");
    if (!bar) return;
    bar.textContent = message;
    bar.hidden = false;
  }
  document.addEventListener("htmx:responseError", (event) => {
    const status = event.detail.xhr.status;
    if (status === 403) {
      notify("This action was refused: your session or form may have expired. Reload the page and try again.");
    } else if (status >= 500) {
      notify("The server had a problem with that request (" + status + "). Nothing was lost; try again in a moment.");
    }
  });
  document.addEventListener("htmx:sendError", () => {
    notify("The server cannot be reached. Check your connection; this page will retry.");
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    const bar = document.getElementById("notice");
    if (bar && !bar.hidden && event.detail.successful) bar.hidden = true;
  });
})();
