// rlhf-lab labeling screens: ranking board (drag and drop + keyboard), blind A/B evaluation, demonstration autosave,
// prompt-kind switcher. User text is only ever set with textContent.
"use strict";
(function () {
  var started = Date.now();

  function elapsedInto(input) {
    var base = parseFloat(input.value || "0") || 0;
    return base + (Date.now() - started) / 1000;
  }

  // --- ranking ----------------------------------------------------------------------------
  function setupRanking(form) {
    var pool = document.getElementById("pool");
    var poolChips = pool.querySelector(".chips");
    var list = document.getElementById("buckets");
    var board = document.getElementById("board");
    var rankedInput = document.getElementById("ranked-input");
    var timeInput = document.getElementById("time-spent");
    var chips = {};
    var letters = {};
    Array.prototype.forEach.call(form.querySelectorAll(".chip"), function (chip) {
      var cid = parseInt(chip.getAttribute("data-cid"), 10);
      chips[cid] = chip;
      letters[chip.getAttribute("data-letter")] = cid;
      var article = document.getElementById("response-" + chip.getAttribute("data-letter"));
      var text = article ? article.querySelector(".response-text").textContent : "";
      var label = document.createElement("span");
      label.className = "chip-text";
      label.textContent = text.length > 48 ? text.slice(0, 48) + "…" : text;
      chip.appendChild(label);
      chip.setAttribute("aria-label", "Response " + chip.getAttribute("data-letter"));
    });
    var buckets = [];
    try {
      var initial = JSON.parse(rankedInput.value || "[]");
      if (Array.isArray(initial)) {
        initial.forEach(function (b) {
          if (!Array.isArray(b)) { return; }
          var clean = b.filter(function (cid) { return chips[cid] && !placedIn(cid, buckets); });
          if (clean.length) { buckets.push(clean); }
        });
      }
    } catch (e) { buckets = []; }
    var selected = null;
    var pendingNewRank = false;  // "N" was pressed: the next digit inserts the selected response as a new rank

    function placedIn(cid, bs) {
      for (var i = 0; i < bs.length; i++) { if (bs[i].indexOf(cid) >= 0) { return true; } }
      return false;
    }
    function dropEmpty() { buckets = buckets.filter(function (b) { return b.length > 0; }); }
    function takeOut(cid) {  // leaves the buckets where they are (maybe empty) so indexes as shown stay valid
      buckets.forEach(function (b) { var i = b.indexOf(cid); if (i >= 0) { b.splice(i, 1); } });
    }
    // index: 0-based rank as shown now; >= length means a new last rank; -1 = unranked
    function place(cid, index) {
      takeOut(cid);
      if (index >= buckets.length) { buckets.push([cid]); } else if (index >= 0) { buckets[index].push(cid); }
      dropEmpty();
      render();
    }
    // A new rank of its own at index (0-based, as shown now); the ranks from there on move down.
    function insertRank(cid, index) {
      takeOut(cid);
      buckets.splice(Math.max(0, Math.min(index, buckets.length)), 0, [cid]);
      dropEmpty();
      render();
    }
    function rankOf(cid) {
      for (var i = 0; i < buckets.length; i++) { if (buckets[i].indexOf(cid) >= 0) { return i + 1; } }
      return 0;
    }
    function announce(text) {
      var status = document.getElementById("selected-status");
      if (status) { status.textContent = text; }
    }
    function dropTarget(el, onDrop) {
      el.addEventListener("dragover", function (e) { e.preventDefault(); el.classList.add("over"); });
      el.addEventListener("dragleave", function (e) {
        if (!e.relatedTarget || !el.contains(e.relatedTarget)) { el.classList.remove("over"); }
      });
      el.addEventListener("drop", function (e) {
        e.preventDefault();
        e.stopPropagation();
        el.classList.remove("over");
        var cid = parseInt(e.dataTransfer.getData("text/plain"), 10);
        if (chips[cid]) { onDrop(cid); }
      });
    }
    function makeZone(index, isNew) {
      var li = document.createElement("li");
      li.className = "bucket" + (isNew ? " new-bucket" : "");
      li.setAttribute("data-index", String(index));
      var h = document.createElement("h4");
      h.textContent = isNew ? "Drop here for a new rank" : "Rank " + (index + 1) + (buckets[index].length > 1 ? " (tie)" : "");
      li.appendChild(h);
      var box = document.createElement("div");
      box.className = "chips";
      li.appendChild(box);
      dropTarget(li, function (cid) { place(cid, isNew ? buckets.length : index); });
      return li;
    }
    function makeInsertZone(index) {  // a thin drop zone before rank index + 1
      var li = document.createElement("li");
      li.className = "insert-zone";
      li.setAttribute("data-insert", String(index));
      var label = document.createElement("span");
      label.className = "insert-label";
      label.textContent = index === 0
        ? "Drop here to insert a new rank before Rank 1"
        : "Drop here to insert a new rank between Rank " + index + " and Rank " + (index + 1);
      li.appendChild(label);
      dropTarget(li, function (cid) { insertRank(cid, index); });
      return li;
    }
    function render() {
      list.textContent = "";
      buckets.forEach(function (b, i) {
        list.appendChild(makeInsertZone(i));
        var li = makeZone(i, false);
        b.forEach(function (cid) { li.querySelector(".chips").appendChild(chips[cid]); });
        list.appendChild(li);
      });
      list.appendChild(makeZone(buckets.length, true));
      Object.keys(chips).forEach(function (k) {
        var cid = parseInt(k, 10);
        if (!placedIn(cid, buckets)) { poolChips.appendChild(chips[cid]); }
        chips[cid].classList.toggle("selected", cid === selected);
      });
      board.classList.remove("dragging");
      rankedInput.value = JSON.stringify(buckets);
    }
    Object.keys(chips).forEach(function (k) {
      var chip = chips[k];
      chip.addEventListener("dragstart", function (e) {
        e.dataTransfer.setData("text/plain", k);
        e.dataTransfer.effectAllowed = "move";
        board.classList.add("dragging");
      });
      chip.addEventListener("dragend", function () { board.classList.remove("dragging"); });
      chip.addEventListener("click", function () { select(parseInt(k, 10)); });
    });
    dropTarget(pool, function (cid) { place(cid, -1); });
    function letterOf(cid) { return chips[cid].getAttribute("data-letter"); }
    function select(cid) {
      selected = cid;
      pendingNewRank = false;
      render();
      chips[cid].focus();
      announce("Selected response " + letterOf(cid));
    }
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      var tag = t && t.tagName;
      if (tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && t.type === "text")) { return; }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
      if (e.ctrlKey || e.metaKey || e.altKey) { return; }
      var letter = e.key.length === 1 ? e.key.toUpperCase() : "";
      if (letter && letters[letter] !== undefined) { e.preventDefault(); select(letters[letter]); return; }
      var digit = /^Digit([0-9])$/.exec(e.code || "");
      var n = digit ? parseInt(digit[1], 10) : (/^[0-9]$/.test(e.key) ? parseInt(e.key, 10) : null);
      if (selected === null) { return; }
      if (letter === "N") {
        e.preventDefault();
        pendingNewRank = true;
        announce("New rank for response " + letterOf(selected) + ": press 1 – 9 for its place (Escape cancels)");
        return;
      }
      if (pendingNewRank) {
        if (e.key === "Shift") { return; }
        pendingNewRank = false;
        if (n !== null && n >= 1 && !e.shiftKey) {
          e.preventDefault();
          takeOut(selected);
          dropEmpty();  // n is where it ends up, counted without it
          insertRank(selected, n - 1);
          chips[selected].focus();
          announce("Response " + letterOf(selected) + " is now rank " + rankOf(selected) + " of " + buckets.length + " on its own");
          return;
        }
        announce("Selected response " + letterOf(selected));
        if (e.key === "Escape") { e.preventDefault(); return; }
        // any other key cancels the new rank and does what it always does
      }
      if (n !== null && e.shiftKey) {
        if (n >= 1 && n <= 7) {
          e.preventDefault();
          var radio = form.querySelector('input[name="likert_' + selected + '"][value="' + n + '"]');
          if (radio) { radio.checked = true; }
        }
        return;
      }
      if (n !== null) {
        e.preventDefault();
        if (n === 0) { place(selected, -1); } else { place(selected, Math.min(n - 1, buckets.length)); }
        chips[selected].focus();
        return;
      }
      if (e.key === "Backspace" || e.key === "Delete") { e.preventDefault(); place(selected, -1); chips[selected].focus(); }
    });
    function submit() {
      if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
    }
    var sending = false;
    form.addEventListener("submit", function (e) {
      if (sending) { e.preventDefault(); return; }  // a double click sends one request (the server is idempotent anyway)
      sending = true;
      rankedInput.value = JSON.stringify(buckets);
      timeInput.value = elapsedInto(timeInput).toFixed(1);
    });
    var status = document.createElement("p");
    status.id = "selected-status";
    status.className = "muted";
    status.setAttribute("aria-live", "polite");
    document.getElementById("board").appendChild(status);
    render();
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

  // --- demonstrations: autosave --------------------------------------------------------------
  function setupDemo(form) {
    var url = form.getAttribute("data-draft-url");
    var area = document.getElementById("demo-text");
    var status = document.getElementById("draft-status");
    var timeInput = document.getElementById("time-spent");
    var timer = null;
    var lastSaved = area.value;
    function save(keepalive) {
      if (area.value === lastSaved) { return; }
      var text = area.value;
      status.textContent = "Saving…";
      fetch(url, {
        method: "PUT", credentials: "same-origin", keepalive: !!keepalive,
        headers: { "Content-Type": "application/json", "X-CSRF-Token": window.rlhf.csrfToken(), "Accept": "application/json" },
        body: JSON.stringify({ text: text, time_spent_s: elapsedInto(timeInput) })
      }).then(function (r) {
        if (r.ok) {
          lastSaved = text;
          status.textContent = "Draft saved at " + new Date().toLocaleTimeString() + ".";
        } else {
          return r.json().then(function (body) { status.textContent = "Not saved: " + (body.detail || r.status); });
        }
      }).catch(function () { status.textContent = "Not saved (offline?). Retrying when you type again."; });
    }
    area.addEventListener("input", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () { save(false); }, 700);
    });
    window.addEventListener("pagehide", function () { save(true); });
    document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") { save(true); } });
    var sending = false;
    form.addEventListener("submit", function (e) {
      if (sending) { e.preventDefault(); return; }
      sending = true;
      lastSaved = area.value;  // no autosave racing the submit
      if (timer) { clearTimeout(timer); }
      timeInput.value = elapsedInto(timeInput).toFixed(1);
    });
  }

  // --- prompt writing: show the fields of the chosen kind --------------------------------------
  function setupPromptKinds(form) {
    function update() {
      var checked = form.querySelector('input[name="kind"]:checked');
      var kind = checked ? checked.value : "plain";
      Array.prototype.forEach.call(form.querySelectorAll("fieldset[data-kind]"), function (fs) {
        fs.hidden = fs.getAttribute("data-kind") !== kind;
      });
    }
    form.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var r = document.querySelector("form[data-ranking]");
    if (r) { setupRanking(r); }
    var ab = document.querySelector("form[data-ab]");
    if (ab) { setupAB(ab); }
    var d = document.getElementById("demo-form");
    if (d) { setupDemo(d); }
    var w = document.querySelector("form[data-prompt-kinds]");
    if (w) { setupPromptKinds(w); }
  });
})();
