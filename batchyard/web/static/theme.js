// Loaded before the page is drawn (not deferred), so a chosen theme shows without a flash.
(function () {
  "use strict";
  try {
    var theme = window.localStorage.getItem("batchyard-theme");
    if (theme === "light" || theme === "dark") { document.documentElement.setAttribute("data-theme", theme); }
  } catch (e) { /* storage refused: the system's theme */ }
})();
