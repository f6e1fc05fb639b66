// rlhf-lab blind A/B evaluation screen: two responses side by side, Likert and flags each, a preference
// with ties, by keyboard alone. User text is only ever set with textContent.
"use strict";
(function () {
  var started = Date.now();

  function elapsedInto(input) {
    var base = parseFloat(input.value || "0") || 0;
    return base + (Date.now() - started) / 1000;
  }

  // --- blind A/B evaluation: two responses side by side, a preference with ties ---------------
  // Keys (listed on the page): Tab / Shift+Tab or Left / Right select a response (on a radio
  // button the arrows move that choice, as in any form); 1-7 rate the selected response; F opens
  // its flags (Escape goes back); A / = / B give the preference; Enter submits (Ctrl+Enter from
  // the comment). Digits only ever rate and A, B, = only ever prefer: no key means two things.
  function setupAB(form) {
    var cards = Array.prototype.slice.call(form.querySelectorAll("article.response"));
    var rankedInput = document.getElementById("ranked-input");
    var timeInput = document.getElementById("time-spent");
    var status = document.getElementById("ab-status");
    var prefs = { a: "A is better", same: "About the same", b: "B is better" };
    var selected = 0;

    function letterOf(i) { return cards[i].getAttribute("data-letter"); }
    function cidOf(i) { return parseInt(cards[i].getAttribute("data-cid"), 10); }
    function say(text) { if (status) { status.textContent = text; } }
    function ratingOf(i) {
      var r = cards[i].querySelector('input[type="radio"]:checked');
      return r ? r.value : null;
    }
    function describe() {
      var parts = cards.map(function (c, i) {
        var v = ratingOf(i);
        return "Response " + letterOf(i) + (v ? " rated " + v : " not rated yet");
      });
      var p = form.querySelector('input[name="preference"]:checked');
      parts.push(p ? "preference: " + prefs[p.value] : "no preference yet");
      return parts.join(" · ");
    }
    function select(i, focus) {
      selected = Math.max(0, Math.min(i, cards.length - 1));
      cards.forEach(function (c, j) {
        c.classList.toggle("selected", j === selected);
        c.setAttribute("aria-current", j === selected ? "true" : "false");
      });
      if (focus) { cards[selected].focus(); }
      say("Selected: Response " + letterOf(selected) + ". " + describe());
    }
    function syncRanked() {  // the same payload the server builds from the preference
      var p = form.querySelector('input[name="preference"]:checked');
      var a = cidOf(0), b = cidOf(1);
      var ranked = !p ? [] : p.value === "a" ? [[a], [b]] : p.value === "b" ? [[b], [a]] : [[a, b]];
      rankedInput.value = JSON.stringify(ranked);
    }
    function prefer(key) {
      var radio = document.getElementById("pref-" + key);
      if (!radio) { return; }
      radio.checked = true;
      syncRanked();
      say(prefs[key] + ". " + describe());
    }
    function rate(n) {
      var radio = cards[selected].querySelector('input[type="radio"][value="' + n + '"]');
      if (radio) {
        radio.checked = true;
        say("Response " + letterOf(selected) + " rated " + n + ". " + describe());
      }
    }
    function openFlags() {
      var details = cards[selected].querySelector("details.flags");
      if (!details) { return; }
      details.open = true;
      var first = details.querySelector('input[type="checkbox"]');
      if (first) { first.focus(); }
      say("Flags of response " + letterOf(selected) + ": Space ticks a flag, Tab moves on, Escape goes back.");
    }
    function submit() {
      if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
    }
    cards.forEach(function (card, i) {
      card.addEventListener("focusin", function () { if (selected !== i || !card.classList.contains("selected")) { select(i, false); } });
      card.addEventListener("click", function () { if (selected !== i) { select(i, false); } });
    });
    form.addEventListener("change", function (e) {
      if (e.target && e.target.name === "preference") { syncRanked(); say(prefs[e.target.value] + ". " + describe()); }
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      var tag = t && t.tagName;
      var typing = tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && !/^(radio|checkbox|submit|button)$/.test(t.type));
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
      if (typing || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) { return; }
      if (e.key === "Enter") {
        if (tag === "BUTTON" || tag === "SUMMARY" || tag === "A") { return; }  // their own Enter: press, open, follow
        e.preventDefault();
        submit();
        return;
      }
      if (e.key === "Escape") {
        if (cards[selected].contains(t) && t !== cards[selected]) { e.preventDefault(); cards[selected].focus(); }
        return;
      }
      if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        if (tag === "INPUT" && t.type === "radio") { return; }  // moves that radio group's choice
        e.preventDefault();
        select(selected + (e.key === "ArrowLeft" ? -1 : 1), true);
        return;
      }
      if (/^[1-7]$/.test(e.key)) { e.preventDefault(); rate(e.key); return; }
      var k = e.key.toLowerCase();
      if (k === "a" || k === "b") { e.preventDefault(); prefer(k); return; }
      if (e.key === "=") { e.preventDefault(); prefer("same"); return; }
      if (k === "f") { e.preventDefault(); openFlags(); }
    });
    var sending = false;
    form.addEventListener("submit", function (e) {
      if (sending) { e.preventDefault(); return; }  // one request per judgment (the server is idempotent anyway)
      sending = true;
      syncRanked();
      timeInput.value = elapsedInto(timeInput).toFixed(1);
    });
    syncRanked();
    select(0, false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var ab = document.querySelector("form[data-ab]");
    if (ab) { setupAB(ab); }
  });
})();
