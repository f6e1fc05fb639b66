// rlhf-lab labeling screens: ranking cards (drag and drop, tap, keyboard), demonstration
// autosave with a browser copy until the server confirms it, prompt folding, skip keys, prompt-kind switcher.
// The blind A/B evaluation screen is static/js/evaluation.js. User text is only ever set with textContent.
"use strict";
(function () {
  var started = Date.now();

  function elapsedInto(input) {
    var base = parseFloat(input.value || "0") || 0;
    return base + (Date.now() - started) / 1000;
  }

  // --- drafts kept in this browser until the server confirms them ---------------------------
  var store = {
    get: function (key) {
      try { var v = window.localStorage.getItem("rlhf-draft-" + key); return v ? JSON.parse(v) : null; } catch (e) { return null; }
    },
    put: function (key, value) {
      try { window.localStorage.setItem("rlhf-draft-" + key, JSON.stringify(value)); } catch (e) { /* full or off */ }
    },
    drop: function (key) { try { window.localStorage.removeItem("rlhf-draft-" + key); } catch (e) { /* off */ } }
  };
  function isTyping(t) {
    var tag = t && t.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && !/^(radio|checkbox|submit|button)$/.test(t.type));
  }
  function clock(d) { return d.toLocaleTimeString(); }

  // --- ranking: full-text cards that are themselves ranked --------------------------------------
  // Each response is a card (#response-X) with a handle (#chip-X: click selects, drag moves), its
  // rank badge, rank buttons (tap to place), Likert 1-7 and flags. Cards live in the rank groups
  // (li.bucket, best first) or in the "Not ranked yet" pool, in A-Z order there.
  function setupRanking(form) {
    var pool = document.getElementById("pool");
    var poolCards = pool.querySelector(".chips");
    var list = document.getElementById("buckets");
    var board = document.getElementById("board");
    var rankedInput = document.getElementById("ranked-input");
    var timeInput = document.getElementById("time-spent");
    var missing = document.getElementById("missing");
    var draftStatus = document.getElementById("draft-status");
    var draftKey = form.getAttribute("data-draft-key");
    var chips = {}, cards = {}, letters = {}, order = [];
    Array.prototype.forEach.call(form.querySelectorAll(".chip"), function (chip) {
      var cid = parseInt(chip.getAttribute("data-cid"), 10);
      var letter = chip.getAttribute("data-letter");
      chips[cid] = chip;
      cards[cid] = document.getElementById("response-" + letter);
      letters[letter] = cid;
      order.push(cid);
    });
    order.sort(function (x, y) { return letterOf(x) < letterOf(y) ? -1 : 1; });
    var buckets = [];
    function readBuckets(value) {
      var out = [];
      if (!Array.isArray(value)) { return out; }
      value.forEach(function (b) {
        if (!Array.isArray(b)) { return; }
        var clean = b.filter(function (cid) { return chips[cid] && !placedIn(cid, out); });
        if (clean.length) { out.push(clean); }
      });
      return out;
    }
    try { buckets = readBuckets(JSON.parse(rankedInput.value || "[]")); } catch (e) { buckets = []; }
    var selected = null;
    var pendingNewRank = false;  // "N" was pressed: the next digit inserts the selected response as a new rank

    function letterOf(cid) { return chips[cid].getAttribute("data-letter"); }
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
      say(cid);
    }
    // A new rank of its own at index (0-based, as shown now); the ranks from there on move down.
    function insertRank(cid, index) {
      takeOut(cid);
      buckets.splice(Math.max(0, Math.min(index, buckets.length)), 0, [cid]);
      dropEmpty();
      render();
      say(cid);
    }
    function rankOf(cid) {
      for (var i = 0; i < buckets.length; i++) { if (buckets[i].indexOf(cid) >= 0) { return i + 1; } }
      return 0;
    }
    function ratingOf(cid) {
      var r = form.querySelector('input[name="likert_' + cid + '"]:checked');
      return r ? r.value : null;
    }
    function announce(text) {
      var status = document.getElementById("selected-status");
      if (status) { status.textContent = text; }
    }
    function say(cid) {
      var r = rankOf(cid);
      announce("Response " + letterOf(cid) + (r ? " is in rank " + r + " of " + buckets.length + (buckets[r - 1].length > 1 ? " (tie)" : "") : " is not ranked"));
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
    // Tap to place: with a response selected, a tap on a rank's heading, "new rank" or an insert
    // line puts it there (a tap on a card's own controls does what that control does).
    function tapTarget(el, onTap) {
      el.addEventListener("click", function (e) {
        if (selected === null || (e.target.closest && e.target.closest("article.response"))) { return; }
        e.preventDefault();
        var cid = selected;
        onTap(cid);
        chips[cid].focus();
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
      tapTarget(li, function (cid) { place(cid, isNew ? buckets.length : index); });
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
      tapTarget(li, function (cid) { insertRank(cid, index); });
      return li;
    }
    function placeButton(cid, text, title, id, pressed, action) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "place" + (pressed ? " current" : "");
      b.id = id;
      b.textContent = text;
      b.title = title;
      b.setAttribute("aria-label", title);
      if (pressed) { b.setAttribute("aria-pressed", "true"); }
      b.addEventListener("click", function (e) {
        e.preventDefault();
        selected = cid;
        action();
        var again = document.getElementById(id) || chips[cid];
        again.focus();
      });
      return b;
    }
    function renderCard(cid) {
      var letter = letterOf(cid);
      var r = rankOf(cid);
      var badge = document.getElementById("rank-badge-" + letter);
      var mates = r ? buckets[r - 1].filter(function (c) { return c !== cid; }).map(letterOf) : [];
      badge.textContent = r ? "Rank " + r + (mates.length ? " (tie with " + mates.join(", ") + ")" : "") : "Not ranked";
      badge.classList.toggle("ranked", r > 0);
      var places = document.getElementById("places-" + letter);
      places.textContent = "";
      var label = document.createElement("span");
      label.className = "places-label";
      label.textContent = "Rank:";
      places.appendChild(label);
      for (var i = 0; i < buckets.length; i++) {
        (function (i) {
          var tie = buckets[i].length && !(buckets[i].length === 1 && buckets[i][0] === cid);
          places.appendChild(placeButton(cid, String(i + 1), "Put response " + letter + " into rank " + (i + 1) + (tie && r !== i + 1 ? " (a tie)" : ""),
            "place-" + letter + "-" + (i + 1), r === i + 1, function () { place(cid, i); }));
        })(i);
      }
      if (!(r && buckets[r - 1].length === 1 && r === buckets.length)) {
        places.appendChild(placeButton(cid, buckets.length ? "New rank " + (buckets.length + 1) : "Rank 1", "Put response " + letter + " into a new last rank",
          "place-" + letter + "-new", false, function () { place(cid, buckets.length); }));
      }
      if (r) {
        places.appendChild(placeButton(cid, "Unrank", "Take response " + letter + " out of the ranking",
          "place-" + letter + "-out", false, function () { place(cid, -1); }));
      }
      var rated = ratingOf(cid) !== null;
      document.getElementById("needs-rating-" + letter).hidden = rated;
      cards[cid].classList.toggle("unrated", !rated);
      cards[cid].classList.toggle("selected", cid === selected);
      cards[cid].setAttribute("aria-current", cid === selected ? "true" : "false");
    }
    function updateMissing() {
      var unranked = order.filter(function (c) { return !rankOf(c); }).map(letterOf);
      var unrated = order.filter(function (c) { return ratingOf(c) === null; }).map(letterOf);
      var parts = [];
      if (unranked.length) { parts.push("rank " + unranked.join(", ")); }
      if (unrated.length) { parts.push("rate " + unrated.join(", ") + " (1 – 7)"); }
      missing.textContent = parts.length ? "Still to do: " + parts.join(" · ") : "Ready to submit.";
      missing.classList.toggle("ready", !parts.length);
    }
    function render() {
      list.textContent = "";
      buckets.forEach(function (b, i) {
        list.appendChild(makeInsertZone(i));
        var li = makeZone(i, false);
        b.forEach(function (cid) { li.querySelector(".chips").appendChild(cards[cid]); });
        list.appendChild(li);
      });
      list.appendChild(makeZone(buckets.length, true));
      order.forEach(function (cid) {
        if (!placedIn(cid, buckets)) { poolCards.appendChild(cards[cid]); }
      });
      order.forEach(renderCard);
      pool.hidden = order.every(function (c) { return rankOf(c) > 0; });
      board.classList.remove("dragging");
      board.classList.toggle("selecting", selected !== null);
      rankedInput.value = JSON.stringify(buckets);
      updateMissing();
      saveLocal();
    }
    order.forEach(function (cid) {
      var chip = chips[cid];
      chip.addEventListener("dragstart", function (e) {
        e.dataTransfer.setData("text/plain", String(cid));
        e.dataTransfer.effectAllowed = "move";
        if (e.dataTransfer.setDragImage) { e.dataTransfer.setDragImage(cards[cid], 24, 24); }
        board.classList.add("dragging");
      });
      chip.addEventListener("dragend", function () { board.classList.remove("dragging"); });
      chip.addEventListener("click", function () { select(cid); });
      cards[cid].querySelector("h3").addEventListener("click", function () { select(cid); });
    });
    dropTarget(pool, function (cid) { place(cid, -1); });
    function select(cid) {
      selected = cid;
      pendingNewRank = false;
      render();
      chips[cid].focus();
      var r = rankOf(cid);
      announce("Selected response " + letterOf(cid) + (r ? " (rank " + r + ")" : "") +
        ". Tap a rank's heading or \u201cDrop here for a new rank\u201d to place it, or use the rank buttons on the card.");
    }
    function toggle(el) { el.checked = !el.checked; el.dispatchEvent(new Event("change", { bubbles: true })); }
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
      if (e.key === "Escape" && isTyping(t)) { e.preventDefault(); t.blur(); if (selected !== null) { chips[selected].focus(); } return; }
      if (isTyping(t) || e.ctrlKey || e.metaKey || e.altKey) { return; }
      var letter = e.key.length === 1 ? e.key.toUpperCase() : "";
      if (letter && letters[letter] !== undefined && !pendingNewRank) { e.preventDefault(); select(letters[letter]); return; }
      if (letter === "X") { e.preventDefault(); toggle(document.getElementById("all-bad")); document.getElementById("all-bad").focus(); return; }
      if (letter === "M") { e.preventDefault(); document.getElementById("comment").focus(); return; }
      if (letter === "T") { e.preventDefault(); document.getElementById("toggle-plain").click(); return; }
      if (letter === "J" || letter === "K") {
        e.preventDefault();
        var shown = Array.prototype.map.call(form.querySelectorAll("article.response"), function (c) { return parseInt(c.getAttribute("data-cid"), 10); });
        var at = selected === null ? -1 : shown.indexOf(selected);
        var next = letter === "J" ? Math.min(at + 1, shown.length - 1) : Math.max(at - 1, 0);
        select(shown[next]);
        cards[shown[next]].scrollIntoView({ block: "nearest" });
        return;
      }
      if (e.key === "Escape" && selected !== null && cards[selected].contains(t) && t !== chips[selected]) {
        e.preventDefault(); chips[selected].focus(); return;
      }
      var digit = /^Digit([0-9])$/.exec(e.code || "");
      var n = digit ? parseInt(digit[1], 10) : (/^[0-9]$/.test(e.key) ? parseInt(e.key, 10) : null);
      if (selected === null) { return; }
      if (letter === "L") {
        e.preventDefault();
        var details = document.getElementById("flags-" + letterOf(selected));
        details.open = true;
        details.querySelector('input[type="checkbox"]').focus();
        announce("Flags of response " + letterOf(selected) + ": Space ticks a flag, Tab moves on, Escape goes back.");
        return;
      }
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
          if (radio) { radio.checked = true; order.forEach(renderCard); updateMissing(); saveLocal(); announce("Response " + letterOf(selected) + " rated " + n); }
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
    // Plain text or formatted (safe Markdown rendered by the server).
    var plainButton = document.getElementById("toggle-plain");
    plainButton.addEventListener("click", function () {
      var plain = !form.classList.contains("show-plain");
      form.classList.toggle("show-plain", plain);
      plainButton.setAttribute("aria-pressed", plain ? "true" : "false");
      plainButton.firstChild.textContent = plain ? "Show formatted " : "Show plain text ";
    });
    // The whole answer is kept in this browser until the server has it (cleared on the done page).
    function snapshot() {
      var likert = {}, flags = {};
      order.forEach(function (cid) {
        likert[cid] = ratingOf(cid);
        flags[cid] = Array.prototype.map.call(form.querySelectorAll('input[name="flag_' + cid + '"]:checked'), function (f) { return f.value; });
      });
      return { ranked: buckets, likert: likert, flags: flags, all_bad: document.getElementById("all-bad").checked,
               comment: document.getElementById("comment").value, at: Date.now() };
    }
    var restoring = true;
    function saveLocal() {
      if (restoring || !draftKey) { return; }
      store.put(draftKey, snapshot());
      if (draftStatus) { draftStatus.textContent = "Kept in this browser at " + clock(new Date()) + " until you submit."; }
    }
    function restoreLocal() {
      var d = draftKey && !form.hasAttribute("data-has-input") ? store.get(draftKey) : null;
      if (!d) { return; }
      buckets = readBuckets(d.ranked);
      order.forEach(function (cid) {
        if (d.likert && d.likert[cid]) {
          var r = form.querySelector('input[name="likert_' + cid + '"][value="' + d.likert[cid] + '"]');
          if (r) { r.checked = true; }
        }
        var fs = (d.flags && d.flags[cid]) || [];
        Array.prototype.forEach.call(form.querySelectorAll('input[name="flag_' + cid + '"]'), function (f) { f.checked = fs.indexOf(f.value) >= 0; });
        if (fs.length) { document.getElementById("flags-" + letterOf(cid)).open = true; }
      });
      document.getElementById("all-bad").checked = !!d.all_bad;
      document.getElementById("comment").value = d.comment || "";
      if (draftStatus) { draftStatus.textContent = "Restored your unsent answer from this browser (kept at " + clock(new Date(d.at)) + ")."; }
    }
    // A rating or flag changes the card's marks only: the cards stay put, so focus stays where it is.
    form.addEventListener("change", function () { order.forEach(renderCard); updateMissing(); saveLocal(); });
    document.getElementById("comment").addEventListener("input", saveLocal);
    var sending = false;
    form.addEventListener("submit", function (e) {
      if (sending) { e.preventDefault(); return; }  // a double click sends one request (the server is idempotent anyway)
      sending = true;
      rankedInput.value = JSON.stringify(buckets);
      timeInput.value = elapsedInto(timeInput).toFixed(1);
    });
    restoreLocal();
    render();
    restoring = false;
  }

  // --- demonstrations: autosave (server) + a copy in this browser until the server confirms it ---
  function setupDemo(form) {
    var url = form.getAttribute("data-draft-url");
    var key = form.getAttribute("data-draft-key");
    var area = document.getElementById("demo-text");
    var status = document.getElementById("draft-status");
    var timeInput = document.getElementById("time-spent");
    var timer = null;
    var lastSaved = area.value;  // what the server has
    var local = form.hasAttribute("data-has-input") ? null : store.get(key);
    if (local && typeof local.text === "string" && local.text !== area.value) {
      area.value = local.text;  // typed here but not yet confirmed by the server: this browser's copy wins
      status.textContent = "Restored what you typed from this browser (kept at " + clock(new Date(local.at)) + "); saving it to the server…";
    } else if (local) {
      store.drop(key);
    }
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
          var mine = store.get(key);
          if (mine && mine.text === text) { store.drop(key); }  // the server has exactly this now
          status.textContent = "Draft saved on the server at " + clock(new Date()) + ".";
        } else {
          return r.json().then(function (body) { status.textContent = "Not saved on the server: " + (body.detail || r.status) + " (kept in this browser)."; });
        }
      }).catch(function () { status.textContent = "Not saved on the server (offline?); kept in this browser. Retrying when you type again."; });
    }
    area.addEventListener("input", function () {
      store.put(key, { text: area.value, at: Date.now() });
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () { save(false); }, 700);
    });
    if (area.value !== lastSaved) { save(false); }
    window.addEventListener("pagehide", function () { save(true); });
    document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") { save(true); } });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit ? form.requestSubmit() : form.submit(); return; }
      if (e.key === "Escape" && isTyping(e.target)) { e.preventDefault(); e.target.blur(); return; }
      if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) { return; }
      if (e.key === "e" || e.key === "E") { e.preventDefault(); area.focus(); }
    });
    var sending = false;
    form.addEventListener("submit", function (e) {
      if (sending) { e.preventDefault(); return; }
      sending = true;
      lastSaved = area.value;  // no autosave racing the submit
      if (timer) { clearTimeout(timer); }
      timeInput.value = elapsedInto(timeInput).toFixed(1);
    });
  }

  // --- every task page: fold a long prompt, skip / report (S), home (H), clear confirmed drafts ---
  function setupTaskPage() {
    var prompt = document.getElementById("prompt-text");
    var expander = null;
    if (prompt && prompt.scrollHeight > 260) {
      prompt.classList.add("folded");
      expander = document.createElement("button");
      expander.type = "button";
      expander.className = "secondary expander";
      expander.id = "prompt-expander";
      expander.setAttribute("aria-controls", "prompt-text");
      expander.setAttribute("aria-expanded", "false");
      var chars = parseInt(prompt.getAttribute("data-chars") || "0", 10);
      var label = function () {
        var open = !prompt.classList.contains("folded");
        expander.setAttribute("aria-expanded", open ? "true" : "false");
        expander.textContent = (open ? "Fold the prompt" : "Show the whole prompt (" + chars.toLocaleString("en") + " characters)") + " ";
        var k = document.createElement("kbd"); k.textContent = "P"; expander.appendChild(k);
      };
      expander.addEventListener("click", function () { prompt.classList.toggle("folded"); label(); });
      label();
      prompt.parentNode.appendChild(expander);
    }
    Array.prototype.forEach.call(document.querySelectorAll("[data-clear-draft]"), function (el) {
      store.drop(el.getAttribute("data-clear-draft"));  // the server has the answer: no browser copy needed
    });
    document.addEventListener("keydown", function (e) {
      if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) { return; }
      var k = e.key.toLowerCase();
      if (k === "p" && expander) { e.preventDefault(); expander.click(); return; }
      var skip = document.getElementById("skip-details");
      if (k === "s" && skip) { e.preventDefault(); skip.open = true; document.getElementById("skip-reason").focus(); return; }
      var home = document.getElementById("home-link");
      if (k === "h" && home) { e.preventDefault(); window.location.href = home.getAttribute("href"); }
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
    setupTaskPage();
    var r = document.querySelector("form[data-ranking]");
    if (r) { setupRanking(r); }
    var d = document.getElementById("demo-form");
    if (d) { setupDemo(d); }
    var w = document.querySelector("form[data-prompt-kinds]");
    if (w) { setupPromptKinds(w); }
    document.documentElement.setAttribute("data-labeling-ready", "");  // keys and taps are live
  });
})();
