/* HARweb review queue: keyboard-first labeling with the next clip prefetched.
 *
 * The page works without this script (every button is a form POST). With it,
 * a decision swaps in the prefetched clip at once and POSTs in the background;
 * the response (an htmx-style fragment: counter + next clip) refills the
 * prefetch slot. Actions run in order, so fast typing never loses a key.
 */
(() => {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const stage = document.getElementById("stage");
  const slot = document.getElementById("prefetch");
  const toastEl = document.getElementById("review-toast");
  const mode = root.dataset.mode;
  const step = parseFloat(root.dataset.step) || 0.25;
  const hotkeys = JSON.parse(document.getElementById("review-hotkeys").textContent || "{}");
  const csrf = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";

  let chain = Promise.resolve(); // user actions, strictly in order
  let inflight = Promise.resolve(); // the latest request that fills the slot
  let shownAt = performance.now();
  // Exposed for tests and curious users: requests in flight, actions taken.
  const state = (window.harwebReview = { pending: 0, actions: 0, errors: 0 });

  const current = () => stage.querySelector(".clip-card");
  const prefetched = () => slot.querySelector(".clip-card");
  const isEmpty = (card) => !card || card.dataset.empty === "1";

  let toastTimer = null;
  function toast(text, bad = false) {
    toastEl.textContent = text;
    toastEl.classList.toggle("bad", bad);
    toastEl.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => toastEl.classList.remove("show"), bad ? 5000 : 1800);
  }

  // --- server round trips ---------------------------------------------------

  function absorb(html) {
    const tpl = document.createElement("template");
    tpl.innerHTML = html;
    const frag = tpl.content;
    const counter = frag.querySelector("#counter");
    const old = document.getElementById("counter");
    if (counter && old) old.replaceWith(counter);
    const err = frag.querySelector(".review-error");
    if (err) {
      state.errors++;
      toast(err.textContent.trim(), true);
    }
    return Array.from(frag.querySelectorAll(".clip-card"));
  }

  async function request(url, body) {
    state.pending++;
    try {
      const resp = await fetch(url, {
        method: body ? "POST" : "GET",
        body,
        headers: { "HX-Request": "true", "X-CSRFToken": csrf },
        credentials: "same-origin",
      });
      const html = await resp.text();
      if (!resp.ok && !html.includes("review-error")) {
        state.errors++;
        toast(resp.status === 403 ? "Your role does not allow that." : `Server error ${resp.status}.`, true);
        return [];
      }
      return absorb(html);
    } catch (e) {
      state.errors++;
      toast("Network error: that was not saved. Check the connection.", true);
      return [];
    } finally {
      state.pending--;
    }
  }

  // Place clips that arrived: an empty stage takes the first, the slot the next.
  function receive(cards) {
    for (const card of cards) {
      if (isEmpty(current()) && !isEmpty(card)) show(card);
      else if (!prefetched()) park(card);
    }
  }

  function fill() {
    const cur = current();
    const held = isEmpty(cur) ? "" : cur.dataset.clipId;
    const url = `${root.dataset.nextUrl}&held=${held}&want=${held ? 1 : 2}`;
    inflight = request(url).then(receive);
    return inflight;
  }

  // --- the player -------------------------------------------------------------

  function edges(card) {
    const f = card.querySelector("form");
    return [parseFloat(f.elements.start_s.value), parseFloat(f.elements.end_s.value)];
  }

  function show(card) {
    const old = current();
    if (old) pause(old);
    stage.replaceChildren(card);
    shownAt = performance.now();
    const v = card.querySelector("video");
    if (v) {
      v.muted = true;
      const [s] = edges(card);
      if (v.readyState >= 1) v.currentTime = s;
      v.play().catch(() => {});
    }
  }

  function park(card) {
    pause(card);
    slot.replaceChildren(card);
  }

  function pause(card) {
    const v = card && card.querySelector("video");
    if (v) v.pause();
  }

  // Loop the clip between its (possibly nudged) edges; move the playhead.
  function tick() {
    const card = current();
    const v = card && card.querySelector("video");
    if (v && v.readyState >= 1 && !v.dataset.userPaused) {
      const [s, e] = edges(card);
      if (v.currentTime >= e - 0.04 || v.currentTime < s - 0.3) {
        v.currentTime = s;
        if (v.paused) v.play().catch(() => {});
      }
      const head = card.querySelector(".minitl-head");
      const dur = parseFloat(card.dataset.duration);
      if (head && dur) head.style.left = `${(100 * v.currentTime) / dur}%`;
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);

  stage.addEventListener("click", (e) => {
    const v = e.target.closest("video");
    if (!v) return;
    if (v.paused) {
      delete v.dataset.userPaused;
      v.play().catch(() => {});
    } else {
      v.dataset.userPaused = "1";
      v.pause();
    }
  });

  // --- actions ----------------------------------------------------------------

  function enqueue(fn) {
    state.actions++;
    chain = chain.then(fn).catch((e) => toast(String(e), true));
  }

  // ``pick`` is a choice value, or a function of the card on stage when the
  // action runs (a digit means "the n-th button of the clip shown then").
  function decide(pick, extra = {}) {
    enqueue(async () => {
      const card = current();
      if (isEmpty(card)) return;
      const choice = typeof pick === "function" ? pick(card) : pick;
      if (!choice) return;
      const form = card.querySelector("form.decide-form");
      const data = new FormData(form);
      data.set("choice", choice);
      for (const [k, v] of Object.entries(extra)) data.set(k, v);
      data.set("duration_ms", String(Math.round(performance.now() - shownAt)));
      let next = prefetched();
      if (!next) {
        await inflight; // the previous decision is bringing it
        next = prefetched();
      }
      if (next) {
        show(next); // instant: no waiting for the server
        data.set("held", isEmpty(next) ? "" : next.dataset.clipId);
        data.set("want", "1");
        inflight = request(form.action, data).then((cards) => {
          if (cards.length) receive(cards);
          else if (!prefetched()) return fill();
        });
      } else {
        stage.classList.add("busy");
        data.set("held", "");
        data.set("want", "2");
        const cards = await request(form.action, data);
        stage.classList.remove("busy");
        if (cards.length) {
          pause(card);
          stage.replaceChildren();
          receive(cards);
        } else {
          await fill();
        }
      }
    });
  }

  function undo() {
    enqueue(async () => {
      await inflight;
      const data = new FormData();
      data.set("mode", mode);
      data.set("csrfmiddlewaretoken", csrf);
      const cards = await request(root.dataset.undoUrl, data);
      if (!cards.length) return;
      const cur = current();
      if (!isEmpty(cur)) park(cur); // it comes right after the undone clip
      show(cards[0]);
      toast("Undone: decide this clip again.");
    });
  }

  function nudge(edge, delta) {
    const card = current();
    if (isEmpty(card)) return;
    const f = card.querySelector("form").elements;
    const dur = parseFloat(card.dataset.duration) || Infinity;
    let [s, e] = edges(card);
    if (edge === "start") s = Math.min(Math.max(0, s + delta), e - step);
    else e = Math.max(Math.min(dur, e + delta), s + step);
    f.start_s.value = s.toFixed(2);
    f.end_s.value = e.toFixed(2);
    const strip = card.querySelector(".minitl-strip");
    if (strip && isFinite(dur)) {
      strip.style.left = `${(100 * s) / dur}%`;
      strip.style.width = `${Math.max((100 * (e - s)) / dur, 0.4)}%`;
    }
    const badge = card.querySelector(".loop-badge");
    if (badge) badge.textContent = `looping ${s.toFixed(2)}–${e.toFixed(2)} s`;
    const v = card.querySelector("video");
    if (v && v.readyState >= 1) v.currentTime = edge === "start" ? s : Math.max(s, e - 0.6);
  }

  // --- input ------------------------------------------------------------------

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.classList.contains("decide-form")) {
      e.preventDefault();
      let choice = e.submitter ? e.submitter.value : "default";
      const name = form.elements.label_name.value.trim();
      if (choice === "named" && !name) {
        toast("Type a label name first.");
        return;
      }
      if (choice === "default") choice = name ? "named" : "top";
      decide(choice, choice === "named" ? { label_name: name } : {});
    } else if (form.classList.contains("undo-form")) {
      e.preventDefault();
      undo();
    } else {
      return;
    }
    if (e.submitter) e.submitter.blur();
  });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const t = e.target;
    if (t instanceof HTMLElement && t.matches("input, textarea, select")) {
      if (t.name === "label_name") {
        if (e.key === "Enter") {
          e.preventDefault();
          const name = t.value.trim();
          t.value = "";
          t.blur();
          if (name) decide("named", { label_name: name });
        } else if (e.key === "Escape") {
          t.value = "";
          t.blur();
        }
      } else if (e.key === "Escape" || e.key === "Enter") {
        e.preventDefault();
        t.blur(); // edge fields: Enter keeps the value, keys work again
      }
      return;
    }
    if (t instanceof HTMLElement && t.matches("button, a") && (e.key === "Enter" || e.key === " ")) {
      return; // let a focused button or link do its own thing
    }
    // Holding a key repeats nudges, never decisions.
    if (e.repeat && !e.code.startsWith("Bracket")) return;
    const card = current();
    let handled = true;
    if (/^[1-9]$/.test(e.key)) {
      const key = e.key;
      decide((c) => {
        const btn = c.querySelector(`button[data-key="${key}"]`);
        return btn ? btn.value : null;
      });
    } else if (e.key === "Enter") {
      decide("top");
    } else if (e.code === "BracketLeft") {
      nudge(e.shiftKey ? "end" : "start", -step);
    } else if (e.code === "BracketRight") {
      nudge(e.shiftKey ? "end" : "start", step);
    } else if (e.key === "/") {
      const input = card && card.querySelector("input[name=label_name]");
      if (input) input.focus();
    } else if (e.key === "x" || e.key === "X") {
      decide("reject");
    } else if (e.key === "s" || e.key === "S") {
      decide("skip");
    } else if (e.key === "u" || e.key === "U") {
      undo();
    } else if (hotkeys[e.key.toLowerCase()]) {
      decide(`label:${hotkeys[e.key.toLowerCase()]}`);
    } else {
      handled = false;
    }
    if (handled) e.preventDefault();
  });

  // A page that came without a prefetched clip asks for one.
  if (!isEmpty(current()) && !prefetched()) fill();
})();
