// rlhf-lab labeling screens: ranking board (drag and drop + keyboard), demonstration autosave,
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
    var d = document.getElementById("demo-form");
    if (d) { setupDemo(d); }
    var w = document.querySelector("form[data-prompt-kinds]");
    if (w) { setupPromptKinds(w); }
  });
})();
