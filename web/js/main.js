// The console's shell: sign-in, navigation, hash routing (#/page/param), one page module per area.
import { html, render, useState, useEffect } from "./vendor/htm-preact-standalone.module.js";
import { session, signIn, signOut } from "./api.js";
import { ClientOverview } from "./client-overview.js";
import { AgentsPage, AgentDetail } from "./client-agents.js";
import { InstancesPage, InstanceDetail } from "./client-instances.js";
import { ReplicasPage } from "./client-replicas.js";
import { InterruptionsPage } from "./client-interruptions.js";
import { DecisionsPage } from "./client-decisions.js";
import { SavingsPage } from "./client-savings.js";
import { NotificationsPage } from "./client-notifications.js";
import { AccountPage } from "./client-account.js";
import { AdminOverview } from "./admin-overview.js";
import { ClientsPage } from "./admin-clients.js";
import { ClientDetail } from "./admin-client.js";
import { AdminAgents, AdminInstances } from "./admin-fleet.js";
import { ActivityPage, HealthPage } from "./admin-system.js";
import { ModelsPage } from "./admin-models.js";

const CLIENT_PAGES = [
  ["overview", "Overview", ClientOverview], ["agents", "Agents", AgentsPage, AgentDetail],
  ["instances", "Instances", InstancesPage, InstanceDetail], ["replicas", "Replicas", ReplicasPage],
  ["interruptions", "Interruptions", InterruptionsPage], ["decisions", "Decisions", DecisionsPage],
  ["savings", "Savings", SavingsPage], ["notifications", "Notifications", NotificationsPage],
  ["account", "Account", AccountPage],
];
const ADMIN_PAGES = [
  ["overview", "Overview", AdminOverview], ["clients", "Clients", ClientsPage, ClientDetail],
  ["agents", "All agents", AdminAgents], ["instances", "All instances", AdminInstances],
  ["activity", "Activity", ActivityPage], ["health", "System health", HealthPage], ["models", "Models", ModelsPage],
];

// A hash is anyone's link: a malformed escape ("%", "%E0") is kept as typed rather than thrown (a URIError
// here would leave the console blank).
const decode = (part) => { try { return decodeURIComponent(part); } catch { return part; } };

function parseHash() {
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decode);
  return { page: parts[0] || "overview", param: parts[1] || null };
}

function SignIn({ onSignedIn }) {
  const [kind, setKind] = useState("client");
  const [secret, setSecret] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true); setError(null);
    try {
      onSignedIn(await signIn(kind, secret.trim()));
    } catch (err) {
      const why = err.status === 401 ? (kind === "client" ? "This token is not valid." : "This admin key is not valid.")
        : err.status === 403 ? `Access refused: ${err.body && err.body.message ? err.body.message : "the account is not active"}.`
        : err.status === 429 ? "Too many attempts, wait a moment and retry." : err.message;
      setError(why);
    } finally { setBusy(false); }
  };
  return html`<main class="signin">
    <form class="card signin-card" onSubmit=${submit} autocomplete="off">
      <h1>Spot Optimizer</h1>
      <p class="muted">Sign in with your client token, or as the operator with the admin key.
        The secret is kept in this tab only (session storage) and sent in a header, never in a URL.</p>
      <fieldset class="segmented">
        <label><input type="radio" name="kind" value="client" checked=${kind === "client"}
          onChange=${() => setKind("client")} /> Client token</label>
        <label><input type="radio" name="kind" value="admin" checked=${kind === "admin"}
          onChange=${() => setKind("admin")} /> Admin key</label>
      </fieldset>
      <label class="field">${kind === "client" ? "Client token" : "Admin key"}
        <input type="password" name="secret" autocomplete="off" required value=${secret} onInput=${(e) => setSecret(e.target.value)} /></label>
      ${error ? html`<div class="error" role="alert" id="signin-error">${error}</div>` : null}
      <button type="submit" disabled=${busy || !secret.trim()}>${busy ? "Checking…" : "Sign in"}</button>
    </form></main>`;
}

function Shell({ who, onSignOut }) {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const onHash = () => setRoute(parseHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  const pages = who.kind === "admin" ? ADMIN_PAGES : CLIENT_PAGES;
  const entry = pages.find((p) => p[0] === route.page) || pages[0];
  const Page = route.param && entry[3] ? entry[3] : entry[2];
  return html`<div class="shell">
    <nav class="sidebar">
      <div class="brand">Spot Optimizer<small>${who.kind === "admin" ? "operator" : who.name}</small></div>
      ${pages.map(([id, label]) => html`<a href=${`#/${id}`} class=${entry[0] === id ? "active" : ""} data-nav=${id}>${label}</a>`)}
      <button class="signout secondary" onClick=${onSignOut}>Sign out</button>
    </nav>
    <main class="content" data-page=${entry[0]}>
      <${Page} key=${`${entry[0]}/${route.param || ""}`} who=${who} param=${route.param} />
    </main></div>`;
}

function App() {
  const [who, setWho] = useState(session());
  if (!who) return html`<${SignIn} onSignedIn=${(s) => { location.hash = "#/overview"; setWho(s); }} />`;
  return html`<${Shell} who=${who} onSignOut=${() => { signOut(); setWho(null); }} />`;
}

const root = document.getElementById("app");
root.replaceChildren();  // the static "Loading" placeholder
render(html`<${App} />`, root);
