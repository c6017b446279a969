// Risk models: upload (artifact + manifest), activate a validated version, roll back.
import { api } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Notice, Badge, when, num } from "./ui.js";

const base64Of = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});

function Upload({ action, onDone }) {
  const [artifact, setArtifact] = useState(null);
  const [manifest, setManifest] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const r = await action.run(async () => {
      let parsed;
      try { parsed = JSON.parse(await manifest.text()); } catch { throw new Error("The manifest is not valid JSON."); }
      return api.post("/api/admin/ml-models", { manifest: parsed, artifact_base64: await base64Of(artifact) });
    }, (v) => `Version ${v.version} uploaded (${v.status}); the risk scorer validates it on its next run.`);
    if (r) onDone();
  };
  return html`<form class="inline-form" data-form="upload-model" onSubmit=${submit}>
    <label>Model artifact (.joblib) <input type="file" name="artifact" required onChange=${(e) => setArtifact(e.target.files[0])} /></label>
    <label>Manifest (.json) <input type="file" name="manifest" accept=".json,application/json" required onChange=${(e) => setManifest(e.target.files[0])} /></label>
    <button type="submit" disabled=${action.busy || !artifact || !manifest}>Upload</button></form>`;
}

// The manifest's own evaluation (its "model" block when it has one): the first few numeric metrics.
const metric = (m) => {
  const own = m && typeof m.model === "object" && m.model ? m.model : m;
  if (!own || typeof own !== "object") return "—";
  return Object.entries(own).filter(([, v]) => typeof v === "number").slice(0, 3)
    .map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ") || "—";
};

export function ModelsPage() {
  const state = useApi(() => api.get("/api/admin/ml-models"), []);
  const action = useAction();
  const activate = async (v) => { if (await action.run(() => api.post(`/api/admin/ml-models/${encodeURIComponent(v)}/activate`, {}), `Version ${v} is active.`)) state.reload(); };
  const rollback = async () => {
    if (!window.confirm("Re-activate the previously active model?")) return;
    if (await action.run(() => api.post("/api/admin/ml-models/rollback", {}), (v) => `Rolled back to ${v.version}.`)) state.reload();
  };
  return html`<h1>Risk models</h1>
    <${Section} title="Upload a version" id="upload-model"><${Upload} action=${action} onDone=${state.reload} /><//>
    <${Notice} notice=${action.notice} />
    <${Async} state=${state} what="the models">${(d) => html`
      <${Section} title="Versions" id="models" actions=${html`<span class="muted" data-active-version>active: ${num(d.active_version)}</span>
          <button class="secondary" data-action="rollback" disabled=${action.busy} onClick=${rollback}>Roll back</button>`}>
        <${Table} id="models" rows=${d.versions} rowKey="version" empty="No model uploaded yet." columns=${[
          { key: "version", label: "Version" }, { key: "status", label: "Status", render: (v) => html`<${Badge} value=${v.status} />` },
          { key: "created_at", label: "Uploaded", render: (v) => when(v.created_at) }, { key: "activated_at", label: "Activated", render: (v) => when(v.activated_at) },
          { key: "metrics", label: "Metrics", render: (v) => metric(v.metrics) },
          { key: "rejected_because", label: "Rejected because", render: (v) => num(v.rejected_because) },
          { key: "sha256", label: "sha256", render: (v) => html`<code title=${v.sha256}>${(v.sha256 || "").slice(0, 12)}</code>` },
          { key: "actions", label: "", render: (v) => (v.version === d.active_version || v.status === "rejected" ? "" : html`<button class="small"
              data-action="activate" disabled=${action.busy} onClick=${() => activate(v.version)}>Activate</button>`) }]} /><//>`}<//>`;
}
