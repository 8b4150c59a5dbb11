// ferry serve's page: platforms from /platforms, the fetch through the jobs API, its
// progress from server-sent events, then the download link and the command lines.
// Text from the server or the visitor goes into the page as text, never as markup.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("pick");
  const nameIn = $("name");
  const select = $("platform");
  const tokenIn = $("token");
  const errorP = $("error");
  let asked = "";
  let pending = Promise.resolve();
  let timer = null;
  let events = null;

  const token = () => (tokenIn ? tokenIn.value : "");
  const withToken = (url) =>
    token() ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token()) : url;
  const headers = () => (token() ? { Authorization: "Bearer " + token() } : {});

  function showError(msg) {
    errorP.textContent = msg || "";
  }

  async function answer(resp) {
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      throw new Error((body && body.error) || "the server answered " + resp.status);
    }
    return body;
  }

  function mib(n) {
    return (n / 1048576).toFixed(1) + " MiB";
  }

  // One lookup per name; a submit while it runs waits for it.
  function loadPlatforms() {
    const name = nameIn.value.trim();
    if (!name) return Promise.resolve();
    if (name !== asked) {
      asked = name;
      pending = lookUp(name);
    }
    return pending;
  }

  async function lookUp(name) {
    showError("");
    try {
      const resp = await fetch("/platforms?name=" + encodeURIComponent(name), { headers: headers() });
      const body = await answer(resp);
      if (nameIn.value.trim() !== name) return;
      const want = select.value || select.dataset.default;
      select.replaceChildren();
      for (const p of body.platforms) {
        const v = p.os + "/" + p.architecture + (p.variant ? "/" + p.variant : "");
        const o = document.createElement("option");
        o.value = v;
        o.textContent = v;
        if (v === want) o.selected = true;
        select.append(o);
      }
      select.dataset.for = name;
    } catch (e) {
      asked = "";
      showError(e.message);
    }
  }

  nameIn.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(loadPlatforms, 400);
  });
  nameIn.addEventListener("change", loadPlatforms);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("");
    const name = nameIn.value.trim();
    if (!name) return;
    if (select.dataset.for !== name) await loadPlatforms();
    if (events) events.close();
    const result = $("result");
    const status = $("status");
    const bar = $("bar");
    const link = $("download");
    link.hidden = true;
    bar.hidden = false;
    bar.value = 0;
    $("result-h").textContent = name;
    status.textContent = "Starting…";
    result.hidden = false;
    try {
      const resp = await fetch("/api/pulls", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, headers()),
        body: JSON.stringify({ name: name, platform: select.value || null }),
      });
      const job = await answer(resp);
      const url = job.urls.download;
      const file = name.replace(/[/:.@]/g, "_") + ".tar";
      const auth = token() ? ' --header "Authorization: Bearer $FERRY_TOKEN"' : "";
      $("wget").value = "wget -c --content-disposition" + auth + " '" + location.origin + url + "'";
      $("pull").value = "ferry pull " + (job.platform ? "--platform " + job.platform + " " : "") + name;
      link.href = withToken(url);
      link.setAttribute("download", file);
      link.textContent = "Download " + file;
      events = new EventSource(withToken(job.urls.events));
      events.addEventListener("progress", (m) => {
        const s = JSON.parse(m.data);
        bar.value = s.total_bytes ? s.done_bytes / s.total_bytes : 0;
        if (s.state === "done") {
          bar.value = 1;
          status.textContent = "Ready: " + mib(s.total_bytes) + " in the server's cache.";
          link.hidden = false;
          events.close();
        } else if (s.state === "failed") {
          status.textContent = "Failed.";
          showError(s.error || "the fetch failed");
          events.close();
        } else {
          status.textContent = "Fetching: " + mib(s.done_bytes) + " of " + mib(s.total_bytes);
        }
      });
      events.onerror = () => {
        if (link.hidden) status.textContent = "Lost the connection to the server; retrying…";
      };
    } catch (e) {
      status.textContent = "";
      result.hidden = true;
      showError(e.message);
    }
  });
})();
