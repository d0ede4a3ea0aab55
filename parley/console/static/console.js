// Shows every <time datetime="…UTC…"> in the viewer's own time zone, on load and after each
// htmx swap. The server renders UTC, since it cannot know the zone; without this script the
// page still reads, in UTC.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function localise(root) {
    var times = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(when)) {
        times[i].textContent = format.format(when);
        times[i].title = times[i].getAttribute("datetime");
      }
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localise(event.target); });
})();
