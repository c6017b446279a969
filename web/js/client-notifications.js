// Notifications: newest first, unread filter, mark read.
import { api, qs } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Badge, Notice, Pager, usePaged, when } from "./ui.js";

// The server marks a bounded number per call and says whether more are left (``more``): call again until none are.
async function markAllRead() {
  let updated = 0;
  for (let call = 0; call < 100; call++) {
    const r = await api.post("/api/notifications/mark-all-read", {});
    updated += r.updated;
    if (!r.more) break;
  }
  return { updated };
}

export function NotificationsPage() {
  const paged = usePaged();
  const [unread, setUnread] = useState(false);
  const action = useAction();
  const state = useApi(() => api.get(`/api/notifications${qs({ limit: 50, next_token: paged.token, unread: unread ? "true" : "" })}`), [paged.token, unread]);
  const columns = [
    { key: "created_at", label: "When", render: (n) => when(n.created_at) },
    { key: "severity", label: "Severity", render: (n) => html`<${Badge} value=${n.severity} />` },
    { key: "kind", label: "Kind" },
    { key: "message", label: "Message", render: (n) => html`<span class=${n.is_read ? "muted" : "unread"}>${n.message}</span>` },
    { key: "agent_id", label: "Agent", render: (n) => (n.agent_id ? html`<a href=${`#/agents/${n.agent_id}`}>${n.agent_id}</a>` : "—") },
    { key: "read", label: "", render: (n) => (n.is_read ? "read" : html`<button class="small secondary" data-action="mark-read"
        onClick=${async () => { if (await action.run(() => api.post(`/api/notifications/${encodeURIComponent(n.id)}/mark-read`, {}))) state.reload(); }}>Mark read</button>`) },
  ];
  return html`<h1>Notifications</h1>
    <${Section} title="Notifications" id="notifications" actions=${html`
      <label class="inline"><input type="checkbox" checked=${unread} onChange=${(e) => { setUnread(e.target.checked); paged.first(); }} /> unread only</label>
      <button class="secondary" data-action="mark-all-read" onClick=${async () => { if (await action.run(markAllRead,
        (r) => `${r.updated} marked read.`)) state.reload(); }}>Mark all read</button>`}>
      <${Notice} notice=${action.notice} />
      <${Async} state=${state} what="the notifications">${(d) => html`
        <${Table} id="notifications" rows=${d.notifications} columns=${columns} rowKey="id" empty="No notifications." />
        <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//>
    <//>`;
}
