// Interruptions: what happened to each instance and how long each step of the failover took.
import { api, qs } from "./api.js";
import { html, useApi, Async, Section, Table, Badge, Pager, usePaged, when, ms, num } from "./ui.js";

const step = (r, key) => (r.step_ms && r.step_ms[key] != null ? ms(r.step_ms[key]) : "—");

export function InterruptionTable({ rows, id = "interruptions" }) {
  const columns = [  // what happened and each step's time first; where it happened after
    { key: "detected_at", label: "Detected", render: (r) => when(r.detected_at) },
    { key: "signal_type", label: "Signal", render: (r) => html`<${Badge} value=${r.signal_type} />` },
    { key: "decide", label: "Decided", render: (r) => step(r, "decide") },
    { key: "replacement_ready", label: "Replacement ready", render: (r) => step(r, "replacement_ready") },
    { key: "traffic_moved", label: "Traffic moved", render: (r) => step(r, "traffic_moved") },
    { key: "failover_time_ms", label: "Failover total", render: (r) => ms(r.failover_time_ms) },
    { key: "response_action", label: "Response" },
    { key: "status", label: "Outcome", render: (r) => html`<${Badge} value=${r.status} />${r.error ? html` <span class="reason">${r.error}</span>` : null}` },
    { key: "instance_id", label: "Lost instance", render: (r) => html`${num(r.instance_id)}<div class="muted">${r.pool_id || ""}</div>` },
    { key: "new_instance_id", label: "Replacement", render: (r) => (r.new_instance_id ? html`${r.new_instance_id}<div class="muted">${num(r.new_lifecycle)} ${r.new_pool_id || ""}</div>` : "—") },
    { key: "agent_id", label: "Agent", render: (r) => html`<a href=${`#/agents/${r.agent_id}`}>${r.agent_id}</a>` },
  ];
  return html`<${Table} id=${id} rows=${rows} columns=${columns} rowKey="interruption_id" empty="No interruptions." />`;
}

export function InterruptionsPage() {
  const paged = usePaged();
  const state = useApi(() => api.get(`/api/client/interruptions${qs({ limit: 50, next_token: paged.token })}`), [paged.token]);
  return html`<h1>Interruptions</h1>
    <${Section} title="Interruptions and failovers" id="interruptions">
      <p class="muted">Step times are measured by the product from the signal's detection: decision, replacement ready,
        traffic moved; the total is the failover time it recorded.</p>
      <${Async} state=${state} what="the interruptions">${(d) => html`
        <${InterruptionTable} rows=${d.interruptions} />
        <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//>
    <//>`;
}
