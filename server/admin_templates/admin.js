// Progressive enhancement only: every form works without this script.
// The check can take a while (it talks to Exchange): say so and stop double submits.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("check-form");
  if (!form) { return; }
  form.addEventListener("submit", function () {
    var button = document.getElementById("run-check");
    var progress = document.getElementById("check-progress");
    if (button) { button.disabled = true; }
    if (progress) { progress.textContent = "Running the checks against Exchange\u2026"; }
  });
});
