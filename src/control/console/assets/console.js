// The imds console: reads the JSON views under /console/api, draws them, sends actions with
// the session's CSRF token, and long-polls /console/api/changes to stay current without reloads.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const state = { csrf: null, version: null, selected: null, polling: false, detail: null };
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method === 'POST' && state.csrf) init.headers['X-Imds-Csrf'] = state.csrf;
  const response = await fetch('/console/api/' + path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.message) || response.statusText);
    error.status = response.status;
    error.code = data && data.code;
    throw error;
  }
  return data;
}

function showError(error) {
  const box = $('error');
  box.hidden = !error;
  if (error) box.textContent = (error.code ? error.code + ': ' : '') + error.message;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function showLogin() {
  state.csrf = null;
  $('login').hidden = false;
  $('main').hidden = true;
  $('logout').hidden = true;
  $('live').textContent = 'signed out';
  $('live').className = 'live';
}

function signedIn(session) {
  state.csrf = session.csrf;
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = session.auth !== 'keys';
  refresh().catch(showError);
  live();
}

async function start() {
  try {
    signedIn(await api('GET', 'session'));
  } catch (error) {
    if (error.status === 401) showLogin(); else showError(error);
  }
}

async function live() {
  if (state.polling) return;
  state.polling = true;
  while (state.csrf) {
    try {
      const since = state.version === null ? '' : '?since=' + state.version;
      await api('GET', 'changes' + since);
      $('live').textContent = 'live';
      $('live').className = 'live on';
      await refresh();
    } catch (error) {
      if (error.status === 401) { showLogin(); break; }
      $('live').textContent = 'reconnecting…';
      $('live').className = 'live';
      // The server is away (restart, network): try again shortly rather than in a tight loop.
      await sleep(2000);
    }
  }
  state.polling = false;
}

async function refresh() {
  const fleet = await api('GET', 'fleet');
  state.version = fleet.version;
  renderFleet(fleet);
  if (state.selected) {
    try {
      renderDetail(await api('GET', 'instances/' + encodeURIComponent(state.selected)));
    } catch (error) {
      if (error.status !== 400) throw error;
      state.selected = null;
      $('detail').hidden = true;
    }
  }
}

function renderFleet(fleet) {
  const body = $('fleet').tBodies[0];
  const rows = fleet.instances.map((instance) => {
    const tr = el('tr');
    tr.dataset.instance = instance.instanceId;
    if (instance.instanceId === state.selected) tr.className = 'selected';
    const tokens = el('td', instance.httpTokens, 'tokens ' + instance.httpTokens);
    if (instance.optionsState === 'pending') tokens.textContent += ' (pending)';
    const v1 = instance.noTokenLastHour;
    tr.append(
      el('td', instance.instanceId, 'mono id'),
      el('td', instance.name || '', 'name'),
      el('td', instance.state, 'state'),
      el('td', instance.addresses.join(' '), 'mono'),
      tokens,
      el('td', instance.hopLimit, 'hop-limit'),
      el('td', instance.endpoint, 'endpoint'),
      el('td', v1.answered + ' / ' + v1.rejected, 'no-token'),
    );
    const cell = el('td');
    if (instance.httpTokens !== 'required' && instance.state === 'running') {
      const button = el('button', 'Require IMDSv2', 'require');
      button.type = 'button';
      button.dataset.action = 'requireImdsv2';
      button.dataset.instance = instance.instanceId;
      cell.append(button);
    }
    tr.append(cell);
    return tr;
  });
  body.replaceChildren(...rows);
  const shown = fleet.instances.length;
  $('fleet-count').textContent = shown === fleet.total ? shown + ' instances' : shown + ' of ' + fleet.total + ' instances';
}

function drawGraph(history) {
  const width = 600, height = 150, left = 30, bottom = 18, top = 8;
  const answered = history.answered, rejected = history.rejected;
  const totals = answered.map((a, i) => a + rejected[i]);
  const max = Math.max(1, ...totals);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Token-less requests per minute');
  const plot = height - bottom - top;
  const step = (width - left) / answered.length;
  const line = (y) => {
    const node = document.createElementNS(SVG, 'line');
    node.setAttribute('x1', left); node.setAttribute('x2', width);
    node.setAttribute('y1', y); node.setAttribute('y2', y);
    svg.append(node);
  };
  const label = (x, y, text, anchor) => {
    const node = document.createElementNS(SVG, 'text');
    node.setAttribute('x', x); node.setAttribute('y', y);
    node.setAttribute('text-anchor', anchor || 'start');
    node.textContent = text;
    svg.append(node);
  };
  line(top); line(top + plot);
  label(left - 4, top + 8, max, 'end');
  label(left - 4, top + plot, 0, 'end');
  label(left, height - 4, '60 min ago');
  label(width, height - 4, 'now', 'end');
  const bar = (i, base, count, kind) => {
    if (!count) return base;
    const h = (count / max) * plot;
    const rect = document.createElementNS(SVG, 'rect');
    rect.setAttribute('x', left + i * step + 1);
    rect.setAttribute('width', Math.max(1, step - 2));
    rect.setAttribute('y', base - h);
    rect.setAttribute('height', h);
    rect.setAttribute('class', 'bar ' + kind);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = count + (kind === 'rejected' ? ' refused' : ' answered') + ', ' + (answered.length - 1 - i) + ' min ago';
    rect.append(title);
    svg.append(rect);
    return base - h;
  };
  answered.forEach((a, i) => {
    const base = bar(i, top + plot, rejected[i], 'rejected');
    bar(i, base, a, 'answered');
  });
  $('graph').replaceChildren(svg);
  const sum = (list) => list.reduce((a, b) => a + b, 0);
  $('answered-total').textContent = sum(answered);
  $('rejected-total').textContent = sum(rejected);
}

function renderDetail(detail) {
  state.detail = detail;
  const row = detail.row;
  $('detail').hidden = false;
  $('detail-id').textContent = row.instanceId + (row.name ? ' (' + row.name + ')' : '');
  if (document.activeElement !== $('hop-limit')) $('hop-limit').value = row.hopLimit;
  $('endpoint-toggle').textContent = row.endpoint === 'enabled' ? 'Disable endpoint' : 'Enable endpoint';
  drawGraph(detail.history);

  $('callers-off').hidden = detail.callers.lookedUp;
  $('callers').hidden = !detail.callers.lookedUp;
  const callers = detail.callers.recent.map((caller) => {
    const tr = el('tr');
    const command = caller.commandLine ?? `(a process of user ${caller.uid}: sign in with the control keys to see it)`;
    tr.append(el('td', caller.pid), el('td', command, 'mono'), el('td', caller.requests), el('td', caller.lastSeen));
    return tr;
  });
  if (!callers.length) {
    const tr = el('tr');
    const td = el('td', 'No token-less request from a process on this host yet.', 'note');
    td.colSpan = 4;
    tr.append(td);
    callers.push(tr);
  }
  $('callers').tBodies[0].replaceChildren(...callers);

  const events = [];
  const e = detail.events;
  if (e.spot) events.push('Spot interruption: ' + e.spot.action + ' at ' + e.spot.at + ' (notice from ' + e.spot.noticeAt + ')');
  if (e.rebalanceAt) events.push('Rebalance recommendation from ' + e.rebalanceAt);
  e.maintenance.forEach((m) => events.push(m.code + ' ' + m.id + ': ' + m.description + ', not before ' + m.notBefore));
  if (e.targetLifecycleState) events.push('Target lifecycle state: ' + e.targetLifecycleState);
  if (!events.length) events.push('None.');
  $('events').replaceChildren(...events.map((text) => el('li', text)));

  const faults = detail.faults.map((fault) => {
    const effect = [];
    if (fault.status) effect.push('status ' + fault.status);
    if (fault.latency_ms) effect.push(fault.latency_ms + ' ms late');
    if (fault.rate_limit) effect.push(fault.rate_limit + '/s');
    if (fault.reset) effect.push('reset');
    if (fault.no_answer) effect.push('no answer');
    if (fault.count) effect.push(fault.count + ' times');
    const tr = el('tr');
    const clear = el('button', 'Clear');
    clear.type = 'button';
    clear.dataset.fault = fault.id;
    const cell = el('td');
    cell.append(clear);
    tr.append(el('td', fault.id, 'mono'), el('td', (fault.method ? fault.method + ' ' : '') + fault.path, 'mono'), el('td', effect.join(', ')), el('td', fault.fired), cell);
    return tr;
  });
  $('faults').tBodies[0].replaceChildren(...faults);
}

async function act(body, question) {
  if (question && !window.confirm(question)) return;
  try {
    await api('POST', 'actions', body);
    showError(null);
  } catch (error) {
    if (error.status === 401) showLogin();
    showError(error);
  }
  await refresh().catch(showError);
}

function select(id) {
  state.selected = id;
  refresh().catch(showError);
}

document.addEventListener('DOMContentLoaded', () => {
  $('fleet').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (button) {
      act({ action: button.dataset.action, instanceId: button.dataset.instance });
      return;
    }
    const row = event.target.closest('tr[data-instance]');
    if (row) select(row.dataset.instance);
  });

  $('detail').addEventListener('click', (event) => {
    const id = state.selected;
    const clear = event.target.closest('button[data-fault]');
    if (clear) { act({ action: 'clearFaults', instanceId: id, faultId: clear.dataset.fault }); return; }
    const button = event.target.closest('button[data-detail-action]');
    if (!button) return;
    switch (button.dataset.detailAction) {
      case 'requireImdsv2': act({ action: 'requireImdsv2', instanceId: id }); break;
      case 'setHopLimit': act({ action: 'setHopLimit', instanceId: id, hopLimit: Number($('hop-limit').value) }); break;
      case 'toggleEndpoint': {
        const enabled = state.detail && state.detail.row.endpoint !== 'enabled';
        act({ action: 'setEndpoint', instanceId: id, enabled }, enabled ? null : 'Disable the metadata endpoint of ' + id + '?');
        break;
      }
      case 'sendSpotInterruption': act({ action: 'sendSpotInterruption', instanceId: id }, 'Send a spot interruption to ' + id + '?'); break;
      case 'clearFaults': act({ action: 'clearFaults', instanceId: id }); break;
      case 'terminate': act({ action: 'terminate', instanceId: id }, 'Terminate ' + id + '?'); break;
    }
  });

  $('fault-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const number = (input) => (input.value === '' ? null : Number(input.value));
    act({
      action: 'injectFault',
      instanceId: state.selected,
      path: $('fault-path').value,
      status: number($('fault-status')),
      latency: $('fault-latency').value || null,
      count: number($('fault-count')),
    });
  });

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const session = await api('POST', 'login', {
        accessKeyId: $('login-key').value,
        secretAccessKey: $('login-secret').value,
      });
      $('login-secret').value = '';
      showError(null);
      signedIn(session);
    } catch (error) {
      showError(error);
    }
  });

  $('logout').addEventListener('click', async () => {
    try { await api('POST', 'logout'); } catch (error) { showError(error); }
    showLogin();
  });

  start();
});
