// The pane's first script: a classic script that runs before Office.js and
// anything it loads. It records every script error, every script that failed
// to load, and every Content-Security-Policy violation in `window.vmrBoot`,
// so the pane (which starts later) can say why Office.js could not start,
// and its debug log can show the detail. It never touches Office.js.
(function () {
  "use strict";
  var settle;
  var boot = {
    // Script errors and failed script loads, in order.
    errors: [],
    // Content-Security-Policy violations, in order.
    violations: [],
    // Resolves with the first error's text.
    failed: new Promise(function (resolve) { settle = resolve; })
  };
  function fail(text) {
    boot.errors.push(text);
    settle(text);
  }
  addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName === "SCRIPT") {
      fail("could not load " + t.src);
    } else if (t === window || !t) {
      var where = e.filename ? " (" + e.filename + ":" + e.lineno + ")" : "";
      fail((e.message || "script error") + where);
    }
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    var from = e.sourceFile ? " (from " + e.sourceFile + ":" + e.lineNumber + ")" : "";
    boot.violations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "inline code") + from);
  });
  window.vmrBoot = boot;
})();
