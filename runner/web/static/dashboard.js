// runner dashboard: live updates (server-sent events), filters and sorting.
// Plain script, no build step. Every value from an environment is set with
// textContent, never as markup.
"use strict";

(function () {
  const live = document.getElementById("live");
  function connected(on) { if (live) live.classList.toggle("on", on); }

  function text(el, value) { el.textContent = value == null ? "" : String(value); }

  // --- the environments page ---------------------------------------------------
  const table = document.getElementById("envs");
  if (table) environmentsPage(table);

  function environmentsPage(table) {
    const body = table.tBodies[0];
    const fState = document.getElementById("filter-state");
    const fKind = document.getElementById("filter-kind");
    const fName = document.getElementById("filter-name");
    let sortKey = "environment", sortDir = 1;

    function checkText(c) {
      if (!c) return "";
      return [c.status || "", c.checked_at || ""].join(" ").trim();
    }

    const KEYS = ["environment", "state", "kind", "updated_at", "failed_step", "locked_by", "last_check"];

    function cell(tr, key) { return tr.cells[KEYS.indexOf(key)]; }

    function fill(tr, row) {
      tr.dataset.env = row.environment;
      tr.dataset.state = row.state || "";
      tr.dataset.kind = row.kind || "";
      tr.className = row.error ? "unreadable" : "kind-" + (row.kind || "unknown");
      if (tr.cells.length !== KEYS.length) {
        tr.textContent = "";
        for (let i = 0; i < KEYS.length; i++) tr.appendChild(document.createElement("td"));
      }
      const name = cell(tr, "environment");
      name.textContent = "";
      const a = document.createElement("a");
      a.href = "/environments/" + encodeURIComponent(row.environment);
      text(a, row.environment);
      name.appendChild(a);
      if (row.error) {
        for (const key of KEYS.slice(1)) text(cell(tr, key), "");
        text(cell(tr, "state"), "unreadable: " + row.error);
        return;
      }
      const st = cell(tr, "state");
      st.textContent = "";
      const badge = document.createElement("span");
      badge.className = "state kind-" + (row.kind || "unknown");
      text(badge, row.state);
      st.appendChild(badge);
      text(cell(tr, "kind"), row.kind || "?");
      text(cell(tr, "updated_at"), row.updated_at);
      const failed = cell(tr, "failed_step");
      failed.textContent = "";
      if (row.failed_step) {
        failed.appendChild(document.createTextNode(row.failed_step + " "));
        const k = document.createElement("span");
        k.className = "fkind";
        text(k, row.failure_kind);
        failed.appendChild(k);
      }
      text(cell(tr, "locked_by"), row.locked_by || "");
      text(cell(tr, "last_check"), checkText(row.last_check));
    }

    function value(tr, key) {
      if (key === "environment" || key === "state" || key === "kind") return tr.dataset[key === "environment" ? "env" : key] || "";
      const c = cell(tr, key);
      return c ? c.textContent : "";
    }

    function sort() {
      const rows = Array.from(body.rows);
      rows.sort((a, b) => value(a, sortKey).localeCompare(value(b, sortKey)) * sortDir
        || a.dataset.env.localeCompare(b.dataset.env));
      for (const tr of rows) body.appendChild(tr);
      for (const th of table.tHead.rows[0].cells) {
        if (th.dataset.key === sortKey) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      }
    }

    // a changed row flashes (an animation of its own: no layout of the whole table now)
    function flash(tr) {
      tr.classList.add("changed");
      if (tr.animate) tr.animate([{ backgroundColor: "#fff59d" }, { backgroundColor: "transparent" }], 1200);
    }

    function wanted(tr) {
      const s = fState.value, k = fKind.value, n = fName.value.trim();
      return (!s || tr.dataset.state === s) && (!k || tr.dataset.kind === k)
        && (!n || tr.dataset.env.includes(n));
    }

    function count() {
      let shown = 0;
      for (const tr of body.rows) if (!tr.hidden) shown++;
      text(document.getElementById("count"), shown === body.rows.length ? shown : shown + " of " + body.rows.length);
    }

    function filter() {
      const s = fState.value, k = fKind.value;
      for (const tr of body.rows) tr.hidden = !wanted(tr);
      count();
      const params = new URLSearchParams();
      if (s) params.set("state", s);
      if (k) params.set("kind", k);
      history.replaceState(null, "", params.toString() ? "?" + params : location.pathname);
    }

    function addState(state) {
      if (!state || Array.from(fState.options).some(o => o.value === state)) return;
      const o = document.createElement("option");
      o.value = state;
      text(o, state);
      fState.appendChild(o);
    }

    for (const th of table.tHead.rows[0].cells) {
      th.addEventListener("click", () => {
        if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
        sort();
      });
    }
    // a page the server filtered lacks the other rows: ask it again
    const refilter = table.dataset.filtered ? () => document.getElementById("filters").submit() : filter;
    for (const f of [fState, fKind]) f.addEventListener("change", refilter);
    fName.addEventListener("input", filter);
    filter();

    const index = new Map(Array.from(body.rows).map(tr => [tr.dataset.env, tr]));
    // the changes after the pass this page was drawn from, then every new one
    const source = new EventSource("/events?since=" + encodeURIComponent(table.dataset.since || ""));
    source.onopen = () => connected(true);
    source.onerror = () => connected(false);
    // the server cannot read the environments (the rows are then as last read), or can again
    const problem = document.getElementById("problem");
    source.addEventListener("problem", (event) => {
      const said = JSON.parse(event.data).problem;
      text(problem, said);
      problem.hidden = !said;
    });
    source.addEventListener("rows", (event) => {
      const change = JSON.parse(event.data);
      let added = false;
      for (const row of change.rows) {
        let tr = index.get(row.environment);
        if (!tr) {
          tr = document.createElement("tr");
          body.appendChild(tr);
          index.set(row.environment, tr);
          added = true;
        }
        fill(tr, row);
        addState(row.state);
        tr.hidden = !wanted(tr);
        flash(tr);
      }
      for (const name of change.removed) {
        const tr = index.get(name);
        if (tr) { tr.remove(); index.delete(name); }
      }
      // rows stay in place unless the order may have changed (many rows: no full sort)
      if (added || sortKey !== "environment") sort();
      count();
    });
  }

  // --- an environment's page ---------------------------------------------------
  const envPage = document.getElementById("environment");
  if (envPage) environmentPage(envPage);

  function environmentPage(root) {
    const name = root.dataset.env;
    let following = null;

    async function refresh() {
      const response = await fetch(location.href, { headers: { "accept": "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const section of document.querySelectorAll("section[data-live]")) {
        const other = fresh.getElementById(section.id);
        if (other) section.replaceWith(document.importNode(other, true));
      }
      document.title = fresh.title;
      const logs = document.getElementById("logs"), newLogs = fresh.getElementById("logs");
      if (logs && newLogs && (logs.dataset.log !== newLogs.dataset.log
          || (newLogs.dataset.follow !== undefined && following === null))) {
        logs.replaceWith(document.importNode(newLogs, true));
        follow();
      } else if (logs && newLogs && newLogs.dataset.follow === undefined) {
        const flag = document.getElementById("following");
        if (flag) flag.remove();
      }
    }

    function follow() {
      if (following) { following.close(); following = null; }
      const logs = document.getElementById("logs");
      if (!logs || logs.dataset.follow === undefined) return;
      const pre = document.getElementById("log");
      const url = "/environments/" + encodeURIComponent(name) + "/logs/follow?ref="
        + encodeURIComponent(logs.dataset.log) + "&offset=" + encodeURIComponent(logs.dataset.follow);
      following = new EventSource(url);
      following.addEventListener("chunk", (event) => {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.appendChild(document.createTextNode(JSON.parse(event.data).text));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
      following.onerror = () => {  // refused (too many followed): no more tries
        if (!following || following.readyState !== EventSource.CLOSED) return;
        following = null;
        const flag = document.getElementById("following");
        if (flag) flag.textContent = "not followed live: reload later";
      };
      following.addEventListener("end", () => {
        following.close();
        following = null;
        const flag = document.getElementById("following");
        if (flag) flag.remove();
      });
    }

    follow();
    const source = new EventSource("/events?env=" + encodeURIComponent(name));
    source.onopen = () => connected(true);
    source.onerror = () => connected(false);
    source.addEventListener("rows", () => { refresh(); });
  }
})();
