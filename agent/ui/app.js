// pgbattery web UI. Polls the agent that served the page once a second
// (GET /v1/status, /v1/history, /v1/agent/self) and draws the cluster. When
// the agent stops answering, the last answer stays on screen, dimmed, under
// a banner that says since when. Plain DOM, no framework: every value from
// the API goes in through textContent, never as markup.
'use strict';

(function () {
  const POLL_MS = 1000;
  // A follower forwards /v1/status to the raft leader (3 s) and falls back
  // to its own answer (probes bounded by 2 s), so a slow answer is not yet
  // a lost agent. A dead agent refuses the connection at once.
  const TIMEOUT_MS = 10000;
  const TOKEN_KEY = 'pgbattery.token';
  const TOKEN_HEADER = 'X-Pgbattery-Token';
  const TRACK_SHOWN = 10;
  const HISTORY_SHOWN = 5;
  // Lag bars use a log scale: empty at 64 B, a quarter mark every factor of
  // 32 (2 KiB, 64 KiB, 2 MiB), full at 64 MiB. Colours by absolute lag.
  const LAG_MIN = 64;
  const LAG_FULL = 64 * 1024 * 1024;
  const LAG_WARN = 1024 * 1024;
  const LAG_BAD = 16 * 1024 * 1024;

  const KIND_NAMES = {
    'bootstrap': 'bootstrap',
    'failover': 'failover',
    'switchover': 'switchover',
    'manual-failover': 'manual failover',
    'reinstate': 'reinstated',
  };

  const state = {
    status: null,
    history: null,
    self: null,
    lastOK: 0,        // Date.now() of the last complete answer
    error: null,      // {code, message} of the last failed poll, null after a good one
    drawn: {},        // section -> the JSON it was last drawn from
    // What this page saw itself: how long no writable primary was reported
    // around each change of epoch (the history has no timestamps).
    unwritableSince: 0,
    lastWritableEpoch: 0,
    observedGaps: {}, // epoch -> ms
  };

  const $ = (id) => document.getElementById(id);

  // h builds an element: h('div', {class: 'x', 'data-node': 'n1'}, 'text', child, ...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function setText(id, text, cls, title) {
    const el = $(id);
    el.textContent = text;
    el.className = el.className.split(' ').filter((c) => !['ok', 'warn', 'bad', 'muted'].includes(c)).join(' ');
    if (cls) el.classList.add(cls);
    if (title) el.title = title; else el.removeAttribute('title');
  }

  // ---- token -----------------------------------------------------------

  function getToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function setToken(tok) {
    try {
      if (tok) localStorage.setItem(TOKEN_KEY, tok); else localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token lasts until reload */ }
    memoryToken = tok;
  }

  let memoryToken = getToken();

  function showTokenPanel(show) {
    $('token-panel').hidden = !show;
    $('token-toggle').setAttribute('aria-expanded', String(show));
    if (show) $('token-input').focus();
  }

  function initToken() {
    $('token-input').value = memoryToken;
    $('token-toggle').textContent = memoryToken ? 'Token ✓' : 'Token';
    $('token-toggle').addEventListener('click', () => showTokenPanel($('token-panel').hidden));
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      setToken($('token-input').value.trim());
      $('token-toggle').textContent = memoryToken ? 'Token ✓' : 'Token';
      showTokenPanel(false);
      pollNow();
    });
    $('token-clear').addEventListener('click', () => {
      setToken('');
      $('token-input').value = '';
      $('token-toggle').textContent = 'Token';
      pollNow();
    });
  }

  // ---- API -------------------------------------------------------------

  class APIError extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  // getJSON fetches a path relative to the page (the page is /ui/, the API
  // /v1/...), so the UI also works behind a proxy that adds a path prefix.
  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    const headers = { 'Accept': 'application/json' };
    if (memoryToken) headers[TOKEN_HEADER] = memoryToken;
    try {
      let resp;
      try {
        resp = await fetch(new URL('../' + path, location.href), {
          headers, cache: 'no-store', credentials: 'same-origin', signal: ctl.signal,
        });
      } catch (e) {
        throw new APIError(0, ctl.signal.aborted ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : 'the connection failed');
      }
      let body = null;
      try { body = await resp.json(); } catch (e) { /* not JSON */ }
      if (!resp.ok) throw new APIError(resp.status, (body && body.error) || resp.statusText);
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  let pollTimer = 0;
  let polling = false;

  async function poll() {
    if (polling) return;
    polling = true;
    clearTimeout(pollTimer);
    const started = Date.now();
    try {
      const [status, history, self] = await Promise.all([
        getJSON('v1/status'),
        getJSON('v1/history'),
        state.self ? Promise.resolve(state.self) : getJSON('v1/agent/self'),
      ]);
      state.status = status;
      state.history = history || [];
      state.self = self;
      state.lastOK = Date.now();
      state.error = null;
      observe(status);
    } catch (e) {
      state.error = { code: e.code || 0, message: e.message || String(e) };
      if (e.code === 0) state.self = null; // ask again: it may be a restarted agent
    }
    polling = false;
    try { render(); } catch (e) { console.error('pgbattery UI: drawing failed', e); }
    pollTimer = setTimeout(poll, Math.max(100, POLL_MS - (Date.now() - started)));
  }

  function pollNow() {
    if (!polling) poll();
  }

  // observe notes, per epoch, how long this page saw no writable primary
  // before the epoch's primary became writable.
  function observe(st) {
    const now = Date.now();
    if (!st.writable) {
      if (!state.unwritableSince) state.unwritableSince = now;
      return;
    }
    if (state.unwritableSince && state.lastWritableEpoch && st.epoch > state.lastWritableEpoch) {
      state.observedGaps[st.epoch] = now - state.unwritableSince;
    }
    state.unwritableSince = 0;
    state.lastWritableEpoch = st.epoch;
  }

  // ---- formatting ------------------------------------------------------

  function fmtBytes(n) {
    if (n === undefined || n === null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
  }

  function fmtMs(ms) {
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s';
    return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  }

  function fmtAgo(t) {
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s ago';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min ago';
  }

  function fmtClock(t) {
    return new Date(t).toLocaleTimeString([], { hour12: false });
  }

  function lagFraction(bytes) {
    if (!bytes || bytes <= LAG_MIN) return 0;
    return Math.min(1, Math.log(bytes / LAG_MIN) / Math.log(LAG_FULL / LAG_MIN));
  }

  function lagClass(bytes) {
    if (bytes >= LAG_BAD) return 'bad';
    if (bytes >= LAG_WARN) return 'warn';
    return '';
  }

  function kindName(kind) { return KIND_NAMES[kind] || kind; }

  function arrow(t) { return t.from ? t.from + ' → ' + t.to : t.to; }

  // ---- drawing ---------------------------------------------------------

  function render() {
    renderConnection();
    const st = state.status;
    if (!st) return;
    // Sections are redrawn only when their data changed, so a selection
    // or a hovered tooltip survives the once-a-second refresh.
    drawIfChanged('summary', [st, state.history && state.history.length], () => renderSummary(st));
    drawIfChanged('nodes', [st.members, st.primary, st.raft.leader, st.sync], () => renderNodes(st));
    drawIfChanged('history', [state.history, state.observedGaps], () => renderHistory(state.history || []));
  }

  function drawIfChanged(section, data, draw) {
    const key = JSON.stringify(data);
    if (state.drawn[section] === key) return;
    state.drawn[section] = key;
    draw();
  }

  function renderConnection() {
    const conn = $('conn');
    const banner = $('banner');
    const err = state.error;
    const via = state.self ? state.self.name : location.host;
    conn.classList.toggle('live', !err && !!state.lastOK);
    conn.classList.toggle('lost', !!err);
    $('main').classList.toggle('stale', !!err && !!state.lastOK);
    if (!err) {
      banner.hidden = true;
      banner.replaceChildren();
      $('conn-text').textContent = state.lastOK ? 'live · via ' + via + ' · ' + fmtClock(state.lastOK) : 'connecting…';
      return;
    }
    const since = state.lastOK
      ? ' Showing the last data, from ' + fmtClock(state.lastOK) + ' (' + fmtAgo(state.lastOK) + '); retrying every second.'
      : ' Retrying every second.';
    banner.hidden = false;
    banner.classList.toggle('warn', err.code === 403 || err.code >= 500);
    if (err.code === 403) {
      banner.replaceChildren(h('strong', null, 'ACL token needed.'),
        'This agent requires a token to read the cluster state (' + err.message + '). Enter it with the Token button.' + since);
      if ($('token-panel').hidden && !memoryToken) showTokenPanel(true);
      $('conn-text').textContent = 'token needed';
    } else if (err.code) {
      banner.replaceChildren(h('strong', null, 'The agent answered ' + err.code + '.'), err.message + '.' + since);
      $('conn-text').textContent = 'error ' + err.code;
    } else {
      banner.replaceChildren(h('strong', null, 'Connection lost.'),
        'No answer from the agent at ' + location.host + ' (' + err.message + ').' + since);
      $('conn-text').textContent = state.lastOK ? 'connection lost · last data ' + fmtAgo(state.lastOK) : 'connection lost';
    }
    banner.setAttribute('data-state', err.code === 0 ? 'lost' : 'error');
  }

  function overall(st) {
    const ctl = st.controller.state;
    if (!st.primary) return ['no primary', 'pill-bad'];
    if (ctl === 'failing-over') return ['failing over', 'pill-bad'];
    if (ctl === 'failover-blocked') return ['failover blocked', 'pill-bad'];
    if (!st.writable) return ['no writable primary', 'pill-bad'];
    const down = st.members.filter((m) => m.gossip_status !== 'alive' ||
      (m.role !== 'witness' && !(m.probed && m.running && m.healthy)));
    if (down.length) return ['degraded: ' + down.map((m) => m.name).join(', '), 'pill-warn'];
    if (st.pending) return [st.pending.kind + ' in progress', 'pill-warn'];
    return ['healthy', 'pill-ok'];
  }

  function renderSummary(st) {
    const idEl = $('cluster-id');
    idEl.textContent = st.cluster_id ? 'cluster ' + st.cluster_id.slice(0, 8) : '';
    idEl.title = st.cluster_id ? 'cluster id ' + st.cluster_id + (st.system_id ? ', PostgreSQL system id ' + st.system_id : '') : '';
    const [word, cls] = overall(st);
    const pill = $('overall');
    pill.textContent = word;
    pill.className = 'pill ' + cls;
    pill.setAttribute('data-state', word);
    $('paused-pill').hidden = !st.paused;

    // Primary
    if (st.primary) {
      setText('primary', st.primary, st.writable ? null : 'warn');
      if (st.pending) {
        setText('primary-sub', st.pending.kind + (st.pending.target ? ' to ' + st.pending.target : '') + ' pending', 'warn');
      } else if (st.writable) {
        setText('primary-sub', 'writable', 'ok');
      } else {
        setText('primary-sub', st.primary_ready ? 'not writable (lease or drain)' : 'not ready yet (fence not recorded)', 'warn');
      }
    } else {
      setText('primary', 'none', 'bad');
      setText('primary-sub', 'no primary in the cluster state', 'bad');
    }
    $('primary').setAttribute('data-value', st.primary || '');

    // Epoch
    setText('epoch', String(st.epoch));
    $('epoch').setAttribute('data-value', String(st.epoch));
    const last = st.last_failover || st.last_transition;
    setText('epoch-sub', last ? 'since ' + kindName(last.kind) + ' ' + arrow(last) : '');

    // Timeline and lease
    setText('timeline-id', st.timeline ? String(st.timeline) : '–');
    const lease = st.lease || {};
    if (lease.holder) {
      setText('timeline-sub', lease.released ? 'lease of ' + lease.holder + ' released' + (lease.release_cause ? ': ' + lease.release_cause : '')
        : 'lease: ' + lease.holder + (lease.renewed_lsn ? ' at ' + lease.renewed_lsn : ''), lease.released ? 'warn' : null,
      'the primary\'s lease' + (lease.renewed_lsn ? ', last renewed at WAL position ' + lease.renewed_lsn : ''));
    } else {
      setText('timeline-sub', 'no lease holder', 'muted');
    }

    // Raft
    const voters = st.members.filter((m) => m.voter).length;
    if (st.raft.leader) {
      setText('raft-leader', st.raft.leader);
      setText('raft-sub', 'term ' + st.raft.term + ' · ' + voters + ' voters', null, voters + ' of ' + st.members.length + ' members vote in raft');
    } else {
      setText('raft-leader', 'none', 'bad');
      setText('raft-sub', 'no raft leader: nothing can change', 'bad');
    }

    // Synchronous replication
    const sync = st.sync || {};
    const standbys = sync.standbys || [];
    if (sync.mode === 'async') {
      setText('sync', 'async', null);
      setText('sync-sub', 'standbys: ' + (standbys.length ? standbys.join(', ') : 'none'));
    } else {
      setText('sync', standbys.length ? 'ANY ' + sync.k + ' of ' + standbys.length : 'none', standbys.length ? null : 'warn');
      setText('sync-sub', standbys.length ? standbys.join(', ') + (sync.mode ? ' · ' + sync.mode : '') : 'commits wait for no standby', standbys.length ? null : 'warn');
    }

    // Controller
    const ctl = st.controller || {};
    const ctlCls = { 'healthy': 'ok', 'failing-over': 'bad', 'failover-blocked': 'bad', 'hold-down': 'warn', 'paused': 'warn', 'operation': 'warn', 'unknown': 'muted' }[ctl.state];
    setText('controller', st.paused ? 'paused' : (ctl.state || 'unknown'), st.paused ? 'warn' : ctlCls);
    let sub = ctl.reason || '';
    if (!st.from_leader) sub = 'answer from ' + st.node + "'s replica: raft leader unreachable";
    else if (ctl.state === 'hold-down' && ctl.hold_down_left_ms) sub = 'hold-down ' + fmtMs(ctl.hold_down_left_ms) + ' left';
    else if (!sub) sub = 'on ' + st.node + ', the raft leader';
    setText('controller-sub', sub, st.from_leader ? null : 'warn', ctl.reason || sub);
  }

  function renderNodes(st) {
    const box = $('nodes');
    const members = st.members || [];
    if (!members.length) {
      box.replaceChildren(h('div', { class: 'empty' }, 'No members in the cluster state yet.'));
      return;
    }
    box.replaceChildren(...members.map((m) => nodeCard(st, m)));
    const alive = members.filter((m) => m.gossip_status === 'alive').length;
    $('nodes-note').textContent = members.length + ' members · ' + alive + ' alive · lag bars on a log scale (marks at 2 KiB, 64 KiB, 2 MiB; full at 64 MiB)';
  }

  function nodeCard(st, m) {
    const isLeader = st.raft.leader === m.name;
    const down = m.gossip_status === 'failed' || m.gossip_status === 'left' || (m.role !== 'witness' && !m.probed);
    const busy = !down && m.role !== 'witness' && !m.running;
    const tags = h('div', { class: 'tags' },
      isLeader ? h('span', { class: 'tag leader', title: 'raft leader: its controller decides failovers' }, 'leader') : null,
      m.sync ? h('span', { class: 'tag sync', title: 'in the synchronous standby set' }, 'sync') : null,
      m.no_failover ? h('span', { class: 'tag', title: 'nofailover: never promoted automatically' }, 'nofailover') : null,
      h('span', { class: 'tag role-' + m.role }, m.role),
    );
    const head = h('div', { class: 'node-head' },
      h('span', { class: 'dot ' + m.gossip_status, title: 'gossip: ' + m.gossip_status }),
      h('span', { class: 'node-name' }, m.name),
      tags);

    const rows = [];
    const row = (k, v, cls, title) => rows.push(h('dt', null, k), h('dd', { class: cls || null, title: title || v }, v));
    const gossipCls = { alive: 'ok', suspect: 'warn', failed: 'bad' }[m.gossip_status] || 'muted';
    row('Gossip', m.gossip_status + (m.voter ? ' · raft voter' : ' · raft non-voter'), gossipCls);
    if (m.role === 'witness') {
      row('PostgreSQL', 'none (witness)', 'muted', 'a witness runs no PostgreSQL: it only votes in raft');
    } else if (!m.probed) {
      row('PostgreSQL', 'no answer' + (m.postgres ? ' (last reported ' + m.postgres + ')' : ''), 'bad');
    } else if (!m.running) {
      // starting, promoting, rewinding...: the agent is at work on it.
      row('PostgreSQL', m.postgres || 'not running', ['stopped', 'crashed', 'failed', ''].includes(m.postgres || '') ? 'bad' : 'warn');
    } else {
      row('PostgreSQL', (m.postgres || 'running') + ' · ' + (m.healthy ? 'healthy' : 'unhealthy'), m.healthy ? null : 'warn');
      if (m.in_recovery) {
        row('Serves', m.upstream ? 'reads · streams from ' + m.upstream : 'reads · not streaming', m.upstream ? null : 'warn');
      } else {
        row('Serves', m.writable ? 'reads and writes' : 'reads only (fenced)', m.writable ? null : 'warn');
      }
      row('WAL', (m.timeline ? 'TL ' + m.timeline + ' · ' : '') + (m.lsn || '–'), 'mono',
        m.in_recovery ? 'receive ' + (m.receive_lsn || '–') + ', replay ' + (m.replay_lsn || '–') : 'flush position');
    }
    if (m.addrs && m.addrs.gateway) row('Gateway', m.addrs.gateway, 'mono');

    const card = h('article', {
      class: 'node role-' + m.role + (down ? ' down' : '') + (busy ? ' busy' : ''),
      'data-node': m.name, 'data-role': m.role, 'data-gossip': m.gossip_status,
      'data-leader': isLeader ? 'true' : null,
    }, head, h('dl', { class: 'kv' }, rows));
    if (m.probe_error) card.append(h('div', { class: 'probe-error', title: m.probe_error }, shorten(m.probe_error, 140)));
    if (m.role !== 'witness') card.append(lagBar(st, m));
    return card;
  }

  function lagBar(st, m) {
    const fill = h('div', { class: 'bar-fill' });
    let label = 'Replication lag';
    let value;
    let barCls = 'bar';
    let barTitle = 'log scale: marks at 2 KiB, 64 KiB, 2 MiB; full at 64 MiB or more';
    if (m.name === st.primary && m.probed && m.running && !m.in_recovery) {
      label = 'Replication lag';
      value = 'primary: the reference';
      fill.classList.add('primary');
      fill.style.width = '100%';
      barCls = 'bar primary';
      barTitle = 'standbys\' lag is measured against this node\'s WAL position';
    } else if (m.lag_bytes === undefined || m.lag_bytes === null) {
      value = m.probed ? 'unknown (primary not probed)' : 'unknown';
      fill.classList.add('unknown');
    } else {
      value = m.lag_bytes === 0 ? 'caught up' : fmtBytes(m.lag_bytes);
      const cls = lagClass(m.lag_bytes);
      if (cls) fill.classList.add(cls);
      // A sliver even at zero lag shows that the bar is live.
      fill.style.width = Math.max(1.5, lagFraction(m.lag_bytes) * 100).toFixed(1) + '%';
    }
    return h('div', { class: 'lag', 'data-lag-bytes': m.lag_bytes === undefined ? null : m.lag_bytes },
      h('div', { class: 'lag-head' }, h('span', null, label), h('span', { class: 'lag-value' }, value)),
      h('div', { class: barCls, title: barTitle }, fill));
  }

  function shorten(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

  function renderHistory(hist) {
    const track = $('track');
    const list = $('history');
    const changes = hist.filter((t) => t.kind !== 'bootstrap').length;
    $('history-note').textContent = hist.length
      ? hist.length + ' recorded · ' + changes + ' change' + (changes === 1 ? '' : 's') + ' of primary · newest on the right'
      : '';
    if (!hist.length) {
      track.replaceChildren();
      list.replaceChildren(h('div', { class: 'empty' }, 'No history yet: the cluster has not bootstrapped.'));
      return;
    }
    const shown = hist.slice(-TRACK_SHOWN);
    const pad = 6;
    const events = shown.map((t, i) => {
      const left = shown.length === 1 ? 50 : pad + i * (100 - 2 * pad) / (shown.length - 1);
      const ev = h('div', { class: 'event kind-' + t.kind, title: kindName(t.kind) + ', epoch ' + t.epoch + ': ' + t.reason },
        h('div', { class: 'ev-epoch' }, 'epoch ' + t.epoch),
        h('div', { class: 'ev-dot' }),
        h('div', { class: 'ev-label' }, arrow(t)),
        h('div', { class: 'ev-gap' }, gapText(t, true)));
      ev.style.left = left.toFixed(2) + '%';
      return ev;
    });
    track.replaceChildren(h('div', { class: 'track-line' }), ...events);

    const rows = hist.slice(-HISTORY_SHOWN).reverse().map(historyRow);
    list.replaceChildren(...rows);
    if (hist.length > HISTORY_SHOWN) {
      list.append(h('div', { class: 'panel-note' }, (hist.length - HISTORY_SHOWN) + ' older entries: pgbattery history, or GET /v1/history'));
    }
  }

  function gapText(t, short) {
    if (t.kind === 'bootstrap') return short ? 'first primary' : '';
    if (t.write_gap_ms) return (short ? 'gap ' : 'write gap ') + fmtMs(t.write_gap_ms);
    const seen = state.observedGaps[t.epoch];
    if (seen) return (short ? '~' : 'seen here: ~') + fmtMs(seen) + (short ? ' unwritable' : ' without a writable primary');
    return short ? kindName(t.kind) : 'write gap not measured';
  }

  function historyRow(t) {
    const cands = (t.candidates || []).map((c) => {
      const chosen = c.node === t.to && !c.rejected;
      const lsn = c.receive_lsn || c.replay_lsn || c.flush_lsn || '';
      const why = c.rejected || c.error || (c.reachable ? '' : 'unreachable');
      return h('span', { class: chosen ? 'cand-ok' : 'cand-no' },
        (chosen ? '✓ ' : '✗ ') + c.node + (lsn ? ' ' + lsn : '') + (why && !chosen ? ' (' + why + ')' : ''));
    });
    const candLine = cands.length
      ? h('div', { class: 'e-cands' }, 'candidates: ', ...cands.flatMap((c, i) => i ? [' · ', c] : [c]))
      : h('div', { class: 'e-cands' }, t.decided_by ? 'decided by ' + t.decided_by : '');
    const meta = [];
    if (t.decided_at) meta.push(new Date(t.decided_at).toLocaleString());
    if (t.promote_lsn) meta.push('at ' + t.promote_lsn);
    if (t.maybe_lost) meta.push('≤ ' + fmtBytes(t.maybe_lost) + ' may be lost');
    const gap = gapText(t, false);
    return h('div', {
      class: 'entry', 'data-epoch': t.epoch, 'data-kind': t.kind, 'data-from': t.from || null, 'data-to': t.to,
    },
      h('div', { class: 'e-epoch', title: 'epoch' }, '#' + t.epoch),
      h('div', { class: 'e-what' }, h('span', { class: 'kind-tag kind-' + t.kind }, kindName(t.kind)), h('div', null, arrow(t))),
      h('div', { class: 'e-reason', title: t.reason }, t.reason || ''),
      h('div', { class: 'e-gap' }, t.write_gap_ms ? gap : h('span', { class: 'muted' }, gap)),
      candLine,
      h('div', { class: 'e-meta' }, meta.join(' · ') || ('raft term ' + t.term)));
  }

  // The age of the data in the header and banner moves every second even
  // while a slow answer is awaited.
  setInterval(() => { if (state.lastOK || state.error) renderConnection(); }, 1000);

  initToken();
  poll();
})();
