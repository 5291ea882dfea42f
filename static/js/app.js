// Small progressive enhancements; every page works without them.
document.addEventListener("htmx:responseError", (event) => {
  const status = event.detail.xhr.status;
  if (status === 403) {
    alert("This action was refused (your session or form may have expired). Reload the page and try again.");
  }
});
