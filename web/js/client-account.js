// Account: the AWS accounts the product acts in for this client (with the ExternalId their roles must require)
// and the client's quotas. Both read-only here: the operator binds accounts and sets quotas.
import { api } from "./api.js";
import { html, useApi, Async, Section, Table, num, when, yesNo } from "./ui.js";

// The quotas and policy of GET /api/client/limits (and the admin's), in the order a person reads them.
export const LIMITS = [
  ["max_agents", "Agents", "agents registered (deleted ones excluded)"],
  ["max_instances", "Instances the product launches", "live standbys and replacements, counted in EC2"],
  ["max_standby_usd_per_hour", "Standby spend ($/h)", "the active standbys' prices together"],
  ["max_switches_per_agent_per_day", "Switches per agent per UTC day", "switch reports past it are refused"],
  ["max_instance_vcpus", "vCPUs per instance", "larger types are refused"],
  ["allow_accelerated_types", "GPU / accelerated types", "GPU, Inferentia, Trainium, FPGA, video"],
  ["allowed_instance_families", "Allowed families", "empty: every family within the limits above"],
];

export function limitValue(name, value) {
  if (name === "allow_accelerated_types") return yesNo(value);
  if (name === "allowed_instance_families") return value && value.length ? value.join(", ") : "any";
  return num(value);
}

const accountColumns = [
  { key: "account_id", label: "AWS account" }, { key: "role_arn", label: "Role" },
  { key: "bound_at", label: "Bound", render: (a) => when(a.bound_at) },
];

export function AccountPage() {
  const accounts = useApi(() => api.get("/api/client/accounts"));
  const limits = useApi(() => api.get("/api/client/limits"));
  return html`<h1>Account</h1>
    <${Section} title="AWS accounts" id="accounts"><${Async} state=${accounts} what="the accounts">${(d) => html`
      <dl class="kv">
        <dt>Where the product acts</dt><dd data-key="tenancy">${d.tenancy === "self-hosted"
          ? "in the account it runs in (self-hosted)" : "in your AWS accounts, through a role in each"}</dd>
        <dt>ExternalId</dt><dd><code data-external-id>${d.external_id || "—"}</code>
          <span class="muted"> your role's trust policy must require it (sts:ExternalId)</span></dd>
        ${d.pending_external_id ? html`<dt>Pending ExternalId</dt><dd><code data-pending-external-id>${d.pending_external_id}</code>
          <span class="muted"> a rotation: add it to each role's trust policy (the stack's NextExternalId); the
          current one keeps working until the operator confirms</span></dd>` : null}</dl>
      <p class="muted">Deploy <code>infra/client-account-role.yaml</code> in each account and region your instances
        run in, with this ExternalId; then give the operator the role's ARN to bind it.</p>
      <${Table} id="accounts" rows=${d.accounts} columns=${accountColumns} rowKey="account_id" empty="No AWS account bound yet." />`}<//><//>
    <${Section} title="Quotas" id="limits"><${Async} state=${limits} what="the quotas">${(d) => html`
      <${Table} id="limits" rowKey="name" columns=${[
        { key: "label", label: "Quota" }, { key: "value", label: "Value" }, { key: "hint", label: "" }]}
        rows=${LIMITS.map(([name, label, hint]) => ({ name, label, hint, value: limitValue(name, d.limits[name]) }))} />
      <p class="muted">The operator sets them (<code>POST /api/admin/clients/{id}/limits</code>).</p>`}<//><//>`;
}
