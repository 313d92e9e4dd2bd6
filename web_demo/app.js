// callbot demo page: one WebRTC call to the server, its events shown as a conversation.
// Plain browser JavaScript, no build step. All URLs are relative so the page also works
// when the app is mounted under a prefix (the page URL always ends in "/").
//
// What the page shows follows what the caller hears, not what the server says it sent: the
// bot's voice is played through Web Audio (remote track -> stop gate -> volume -> speaker)
// and an AudioWorklet measures, every ~10 ms, the level of the microphone, of the audio as
// received and of the audio as played. From those the page
//   - shows "Speaking" only while bot audio is actually played,
//   - silences the bot at once (gain 0) on "Stop bot" and on a barge-in, and
//   - measures the caller's own latency: from the end of their speech (its own voice
//     activity edge on the mic) or the moment they sent a message, to the first played
//     sample of the answer. The server's per-stage figures sit behind a details toggle.
//
// `window.callbot` is the page's API (tests, the console, and web_demo/video.js use it):
//   callbot.health            the server's GET /healthz answer (null until it arrives)
//   callbot.whenHealth        a Promise of it
//   callbot.hooks.health      [fn(health)]                  after /healthz arrives
//   callbot.hooks.beforeOffer [async fn(pc, {videoSource})] add tracks before the offer
//   callbot.hooks.track       [fn(RTCTrackEvent)]           every remote track (video too)
//   callbot.hooks.callEnded   [fn()]                        after a call is torn down
//   callbot.videoSlot         the element a video UI may render into (unhide it)
//   callbot.iceServers        the STUN/TURN servers of the last call (GET v1/ice_servers)
//   callbot.pc, .channel, .callId, .events, .state ("speaking" = audible), .serverState,
//   callbot.latencies (per turn), callbot.stops (per Stop/barge-in, in ms: playedSilentMs,
//   receivedSilentMs, fromSpeechMs), callbot.bargeIns (heardStopMs: the caller's speech over
//   the bot to its voice no longer heard)
// The same moments are also dispatched as window events `callbot:health`, `callbot:track`,
// `callbot:callended`.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("app"),
    call: $("call"),
    hangup: $("hangup"),
    mute: $("mute"),
    stopBot: $("stop-bot"),
    status: $("status"),
    botState: $("bot-state"),
    botStateLabel: $("bot-state-label"),
    duration: $("duration"),
    hint: $("hint"),
    micLevel: $("mic-level"),
    micMeter: $("mic-meter"),
    botLevel: $("bot-level"),
    botMeter: $("bot-meter"),
    latency: $("latency"),
    latencyDetails: $("latency-details"),
    breakdown: $("server-breakdown"),
    micSelect: $("mic-select"),
    speakerSelect: $("speaker-select"),
    speakerLabel: $("speaker-select-label"),
    volume: $("volume"),
    language: $("language"),
    languageLabel: $("language-label"),
    voice: $("voice"),
    camera: $("camera"),
    videoPanel: $("video-panel"),
    prompt: $("system-prompt"),
    videoSlot: $("video-slot"),
    localVideo: $("local-video"),
    callId: $("call-id"),
    transcriptLink: $("transcript-link"),
    detailDuration: $("detail-duration"),
    timeLimit: $("time-limit"),
    detailModel: $("detail-model"),
    modelNote: $("model-note"),
    error: $("error"),
    notice: $("notice"),
    log: $("log"),
    textForm: $("text-form"),
    textInput: $("text-input"),
    sendText: $("send-text"),
    announcer: $("announcer"),
    remoteAudio: $("remote-audio"),
  };

  const GATHER_TIMEOUT_MS = 5000;
  const DISCONNECT_GRACE_MS = 3000;
  const MEDIA_SILENCE_MS = 2500; // no packet from the server this long: is it still there?
  const PROBE_TIMEOUT_MS = 2000;
  const HANGUP_TIMEOUT_MS = 2000;
  // Levels, in dBFS of the RMS of ~10 ms blocks.
  const PLAYED_DB = -50; // bot audio above this is "audible"
  const AUDIBLE_HOLD_S = 0.3; // bridges the gaps between words
  const SPEECH_MIN_DB = -50; // the caller's voice: above this and 12 dB over the noise floor
  const SPEECH_START_BLOCKS = 3; // ~30 ms of voice starts speech
  const SPEECH_END_S = 0.35; // this much quiet ends it (the end is the last voiced block)
  const BOT_LABELS = {
    idle: "Idle",
    connecting: "Connecting…",
    listening: "Listening",
    thinking: "Thinking…",
    speaking: "Speaking",
  };
  const TINY_MODEL = /smollm2?-(135|360)m/i;

  const callbot = {
    pc: null,
    channel: null,
    callId: null,
    events: [], // every event received, in order (the whole call history of the page)
    state: "idle", // what the caller perceives: idle | connecting | listening | thinking | speaking
    serverState: "idle", // the server's last bot.state
    connection: "idle", // idle | connecting | connected | ending | ended | failed
    lastError: null,
    notice: null,
    micPeak: 0, // highest mic level shown on the meter this call, 0..100
    muted: false,
    textOnly: false, // a call without a microphone (receive-only audio + typed messages)
    latencies: [], // {turnId, ms, from: "speech" | "text"} per answered turn
    stops: [], // {reason, playedSilentMs, receivedSilentMs} per Stop / barge-in
    bargeIns: [], // {heardStopMs}: caller's speech over the bot -> the bot no longer heard
    health: null,
    whenHealth: null,
    hooks: { health: [], beforeOffer: [], track: [], callEnded: [] },
    videoSlot: ui.videoSlot,
    audio: null, // the Web Audio graph of the current call (see startAudio)
    limits: null, // {max_call_s, idle_timeout_s} from the answer
  };
  window.callbot = callbot;
  Object.defineProperty(callbot, "localStream", { get: () => localStream }); // for tests

  let localStream = null;
  let audioSender = null;
  let endingByUs = false;
  let disconnectTimer = null;
  let monitorTimer = null;
  let durationTimer = null;
  let callStartedAt = 0;
  let outputDeviceId = "";

  function runHooks(name, ...args) {
    for (const fn of callbot.hooks[name]) {
      try {
        const r = fn(...args);
        if (r && typeof r.catch === "function") r.catch((e) => console.error(e));
      } catch (err) {
        console.error(`callbot hook ${name} failed`, err);
      }
    }
    window.dispatchEvent(new CustomEvent(`callbot:${name.toLowerCase()}`, { detail: args[0] }));
  }

  // ---- status, errors, announcements -------------------------------------------------------

  function setConnection(state, text) {
    callbot.connection = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function showError(message) {
    callbot.lastError = message;
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    callbot.lastError = null;
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  function showNotice(message) {
    callbot.notice = message;
    ui.notice.textContent = message || "";
    ui.notice.hidden = !message;
  }

  // Screen readers hear final lines only: never partial transcripts or single words.
  function announce(text) {
    const p = document.createElement("p");
    p.textContent = text;
    ui.announcer.append(p);
    while (ui.announcer.childElementCount > 5) ui.announcer.firstElementChild.remove();
  }

  function setInCall(active) {
    ui.call.disabled = active;
    ui.hangup.disabled = !active;
    for (const el of [ui.voice, ui.prompt, ui.language, ui.camera]) el.disabled = active;
    document.body.classList.toggle("in-call", active);
    setChatEnabled(false);
  }

  function setChatEnabled(enabled) {
    ui.textInput.disabled = !enabled;
    ui.sendText.disabled = !enabled;
    ui.stopBot.disabled = !enabled;
  }

  // ---- the bot's state, as heard ---------------------------------------------------------

  function renderState() {
    let state = callbot.serverState;
    const a = callbot.audio;
    if (callbot.connection === "connecting") state = "connecting";
    else if (!callbot.pc) state = "idle";
    else if (a && a.measuring) {
      if (a.audible) state = "speaking";
      else if (state === "speaking") state = a.gateClosed ? "listening" : "thinking";
      // the server started a reply, but nothing of it is heard yet: still "thinking"
    }
    if (state === callbot.state && ui.botState.dataset.state === state) return;
    callbot.state = state;
    ui.botState.dataset.state = state;
    ui.botStateLabel.textContent = BOT_LABELS[state] || state;
  }

  // ---- conversation log ------------------------------------------------------------------

  const conv = {
    userPartial: null, // <li> showing the live transcript of the current utterance
    bot: null, // {li, text, body, turnId} of the reply being streamed
    byTurn: new Map(), // turn_id -> bot reply entry
    typed: [], // {text, at} we sent as input.text, to tag their transcript.final
    typedTurns: new Map(), // turn_id -> audio-clock time the message was sent
    turnId: undefined, // the turn the next bot reply belongs to
  };

  function scrollLog() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function addEntry(kind, text) {
    const li = document.createElement("li");
    li.className = `entry entry-${kind}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = kind === "user" ? "You" : kind === "bot" ? "Bot" : "";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    if (who.textContent) li.append(who);
    li.append(body);
    ui.log.append(li);
    scrollLog();
    return { li, body };
  }

  function addNote(text, kind = "note") {
    addEntry(kind, text);
  }

  function onPartial(text) {
    if (!conv.userPartial) {
      const entry = addEntry("user", text);
      entry.li.classList.add("partial");
      conv.userPartial = entry;
    } else {
      conv.userPartial.body.textContent = text;
      scrollLog();
    }
  }

  function onFinal(ev) {
    finishBot();
    const typedAt = conv.typed.findIndex((t) => t.text === ev.text);
    const typed = typedAt >= 0;
    let entry = conv.userPartial;
    if (typed) {
      conv.typedTurns.set(ev.turn_id, conv.typed[typedAt].at);
      conv.typed.splice(typedAt, 1);
    }
    if (typed || !entry) {
      entry = addEntry("user", ev.text);
    } else {
      entry.body.textContent = ev.text;
      conv.userPartial = null;
    }
    entry.li.classList.remove("partial");
    if (typed) entry.li.classList.add("typed");
    entry.li.dataset.turnId = ev.turn_id;
    conv.bot = null;
    conv.turnId = ev.turn_id;
    announce(`You said: ${ev.text}`);
    scrollLog();
  }

  function botEntry() {
    if (!conv.bot) {
      const entry = addEntry("bot", "");
      conv.bot = { ...entry, text: "", turnId: conv.turnId, announced: false };
      if (conv.turnId !== undefined) conv.byTurn.set(conv.turnId, conv.bot);
    }
    return conv.bot;
  }

  function finishBot(bot = conv.bot) {
    if (!bot || bot.announced || !bot.text.trim()) return;
    bot.announced = true;
    announce(`Bot said: ${bot.text.trim()}`);
  }

  function onDelta(delta) {
    const bot = botEntry();
    bot.text += delta;
    bot.body.textContent = bot.text;
    scrollLog();
  }

  function onInterrupted(ev) {
    closeGate(ev.reason || "interrupted"); // what is still buffered is not played
    const bot = conv.byTurn.get(ev.turn_id) || conv.bot;
    const reason = ev.reason === "barge_in" ? "you spoke"
      : ev.reason === "cancelled" ? "stopped"
        : ev.reason === "text_input" ? "new message" : ev.reason;
    if (bot) {
      const heard = (ev.spoken_text || "").trim();
      bot.body.textContent = "";
      const heardSpan = document.createElement("span");
      heardSpan.textContent = heard;
      bot.body.append(heardSpan);
      const rest = bot.text.trim();
      if (rest && rest !== heard) {
        const unheard = document.createElement("span");
        unheard.className = "unheard";
        unheard.title = "generated but not heard";
        unheard.textContent = (heard ? " " : "") + (rest.startsWith(heard) ?
          rest.slice(heard.length).trim() : rest);
        bot.body.append(unheard);
      }
      bot.li.classList.add("interrupted");
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = `interrupted (${reason})`;
      bot.li.append(tag);
      if (!bot.announced) {
        bot.announced = true;
        announce(`Bot, interrupted: ${heard || "nothing heard"}`);
      }
    } else {
      addNote(`Bot interrupted (${reason})`, "note interrupted");
    }
    if (conv.bot === bot) conv.bot = null;
    scrollLog();
  }

  // Server-side stages, in words a caller can follow; shown behind "Server breakdown".
  const METRIC_LABELS = [
    ["end_of_turn_ms", "Waiting to be sure you had finished"],
    ["asr_ms", "Speech recognition"],
    ["retrieval_ms", "Looking things up"],
    ["vision_ms", "Looking at the video"],
    ["llm_first_token_ms", "First words of the answer written"],
    ["tts_first_ms", "First words turned into speech"],
    ["first_audio_ms", "First audio sent by the server"],
  ];

  const metricsByTurn = new Map(); // turn_id -> metrics event

  function onMetrics(ev) {
    metricsByTurn.set(ev.turn_id, ev);
    // The breakdown belongs to the turn whose figure is shown (or the first one).
    const shown = ui.latency.dataset.turnId;
    if (shown === undefined || shown === String(ev.turn_id)) renderBreakdown(ev.turn_id);
  }

  function renderBreakdown(turnId) {
    const ev = metricsByTurn.get(turnId);
    ui.breakdown.textContent = "";
    if (!ev) {
      ui.latencyDetails.hidden = true;
      return;
    }
    const typed = conv.typedTurns.has(ev.turn_id);
    const rows = METRIC_LABELS.filter(([key]) => typeof ev[key] === "number")
      // A typed turn has no end-of-turn wait and no speech recognition.
      .filter(([key]) => !(typed && (key === "end_of_turn_ms" || key === "asr_ms")));
    for (const [key, label] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = `${Math.round(ev[key])} ms`;
      dd.dataset.key = key;
      ui.breakdown.append(dt, dd);
    }
    ui.latencyDetails.hidden = rows.length === 0;
    ui.latencyDetails.dataset.turnId = String(turnId);
  }

  // ---- events from the server ------------------------------------------------------------

  function onEvent(ev) {
    callbot.events.push(ev);
    switch (ev.type) {
      case "bot.state":
        callbot.serverState = ev.state;
        if (ev.state !== "speaking" && callbot.audio) callbot.audio.awaitAck = false;
        renderState();
        break;
      case "vad.speech_started":
      case "vad.speech_stopped":
        break; // the page runs its own voice detection on the mic for its latency figure
      case "response.audio.started":
        armOnset(ev.turn_id);
        break;
      case "response.audio.done":
        finishBot(conv.byTurn.get(ev.turn_id));
        break;
      case "transcript.partial":
        onPartial(ev.text);
        break;
      case "transcript.final":
        onFinal(ev);
        break;
      case "response.text.delta":
        onDelta(ev.delta);
        break;
      case "response.interrupted":
        onInterrupted(ev);
        break;
      case "metrics":
        onMetrics(ev);
        break;
      case "safety.flagged":
        addEntry("metrics", `safety: ${ev.source} ${ev.action} (${(ev.categories || []).join(", ")})`);
      case "vision.used":
        if (window.callbotVideo) window.callbotVideo.onVisionUsed(ev);
        break;
      case "error":
        if (ev.code === "max_duration") {
          endReason = "The call reached the server's time limit and was ended.";
        } else {
          showError(`Server error: ${ev.message} (${ev.code})`);
        }
        break;
      case "idle.warning":
        showError(`No speech heard: the call ends in ${Math.round(ev.seconds_left)} s ` +
                  "unless you speak (is your microphone muted?)");
        break;
      case "dtmf":  // phone calls only (a keypad digit); a browser call never gets it
        break;
      default:
        break;
    }
  }
  let endReason = null;

  function onChannelMessage(msg) {
    if (typeof msg.data !== "string") return;
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (ev && typeof ev.type === "string") onEvent(ev);
  }

  function sendMessage(obj) {
    const ch = callbot.channel;
    if (!ch || ch.readyState !== "open") return false;
    ch.send(JSON.stringify(obj));
    return true;
  }

  // ---- audio: levels, voice detection, what is played --------------------------------------

  // Runs on the audio thread: RMS of each input over ~10 ms, stamped with the audio clock.
  const LEVEL_TAP = `
class LevelTap extends AudioWorkletProcessor {
  constructor() { super(); this.sums = [0, 0, 0]; this.n = 0; this.t0 = 0; }
  process(inputs) {
    if (this.n === 0) this.t0 = currentTime;
    let frames = 128;
    for (let i = 0; i < 3; i++) {
      const ch = inputs[i] && inputs[i][0];
      if (!ch) continue;
      frames = ch.length;
      let s = 0;
      for (let k = 0; k < ch.length; k++) s += ch[k] * ch[k];
      this.sums[i] += s;
    }
    this.n += frames;
    if (this.n >= sampleRate / 100) {
      const n = this.n;
      this.port.postMessage({ t: this.t0, d: n / sampleRate,
        mic: Math.sqrt(this.sums[0] / n), played: Math.sqrt(this.sums[1] / n),
        received: Math.sqrt(this.sums[2] / n) });
      this.sums = [0, 0, 0];
      this.n = 0;
    }
    return true;
  }
}
registerProcessor("callbot-level-tap", LevelTap);
`;

  const toDb = (rms) => (rms > 1e-6 ? 20 * Math.log10(rms) : -120);
  const toPct = (db) => Math.max(0, Math.min(100, ((db + 60) / 60) * 100));

  async function startAudio() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    const ctx = new Ctx({ latencyHint: "interactive" });
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    const a = {
      ctx,
      measuring: false,
      tap: null,
      micSource: null,
      remoteSource: null,
      gate: ctx.createGain(), // 0 at once on Stop / barge-in
      volume: ctx.createGain(), // the caller's bot volume
      gateClosed: false,
      awaitAck: false,
      closedAt: 0,
      stopRecord: null,
      audible: false,
      lastPlayed: -1, // audio-clock end of the last audible block
      lastReceived: -1,
      onsetAt: null, // start of the current run of played audio
      onsetTurn: undefined,
      armed: null, // {turnId, at}: the next played onset answers this turn
      // caller voice activity
      floorDb: -70,
      loudRun: 0,
      speaking: false,
      speechStart: 0,
      lastVoiced: -1,
      lastSpeechEnd: null,
      bargeWatch: null, // {start, silentFrom}: the caller started talking over the bot
      meterAt: 0,
      botPeak: 0,
    };
    a.volume.gain.value = Number(ui.volume.value) / 100;
    a.gate.connect(a.volume).connect(ctx.destination);
    if (outputDeviceId && typeof ctx.setSinkId === "function") {
      ctx.setSinkId(outputDeviceId).catch(() => {});
    }
    try {
      const url = URL.createObjectURL(new Blob([LEVEL_TAP], { type: "text/javascript" }));
      await ctx.audioWorklet.addModule(url);
      URL.revokeObjectURL(url);
      a.tap = new AudioWorkletNode(ctx, "callbot-level-tap", {
        numberOfInputs: 3, numberOfOutputs: 1, outputChannelCount: [1],
      });
      a.tap.connect(ctx.destination); // it outputs silence; connected so that it runs
      a.volume.disconnect();
      a.volume.connect(ctx.destination);
      a.gate.connect(a.tap, 0, 1); // as played (after the stop gate, before the volume)
      a.tap.port.onmessage = (e) => onLevels(a, e.data);
      a.measuring = true;
    } catch (err) {
      console.warn("no AudioWorklet: levels and the caller's latency are not measured", err);
    }
    return a;
  }

  function connectMic(a, stream) {
    if (!a) return;
    if (a.micSource) a.micSource.disconnect();
    a.micSource = null;
    if (!stream || !stream.getAudioTracks().length) return;
    a.micSource = a.ctx.createMediaStreamSource(stream);
    if (a.tap) a.micSource.connect(a.tap, 0, 0);
  }

  function connectRemote(a, stream) {
    // Chromium feeds a remote WebRTC track into Web Audio only while a media element plays
    // it: the <audio> element plays it muted, Web Audio plays it audibly.
    ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.muted = !!a;
    ui.remoteAudio.play().catch(() => {});
    if (!a) return;
    if (a.remoteSource) a.remoteSource.disconnect();
    a.remoteSource = a.ctx.createMediaStreamSource(stream);
    a.remoteSource.connect(a.gate);
    if (a.tap) a.remoteSource.connect(a.tap, 0, 2); // as received
  }

  function stopAudio() {
    const a = callbot.audio;
    callbot.audio = null;
    if (!a) return;
    if (a.tap) a.tap.port.onmessage = null;
    a.ctx.close().catch(() => {});
    setMeter(ui.micLevel, ui.micMeter, 0);
    setMeter(ui.botLevel, ui.botMeter, 0);
  }

  function setMeter(fill, meter, pct) {
    fill.style.width = `${pct.toFixed(0)}%`;
    fill.toggleAttribute("data-loud", pct > 90);
    meter.setAttribute("aria-valuenow", pct.toFixed(0));
  }

  function onLevels(a, m) {
    if (callbot.audio !== a) return;
    const end = m.t + m.d;
    // The caller's voice (ignored while muted: the server hears nothing either).
    const micDb = callbot.muted ? -120 : toDb(m.mic);
    const micPct = toPct(micDb);
    callbot.micPeak = Math.max(callbot.micPeak, micPct);
    if (micDb < a.floorDb) a.floorDb = Math.max(micDb, -90);
    else a.floorDb += 0.002 * (micDb - a.floorDb);
    const voiced = micDb > SPEECH_MIN_DB && micDb > a.floorDb + 12;
    if (voiced) {
      if (a.loudRun === 0) a.runStart = m.t;
      a.loudRun += 1;
      a.lastVoiced = end;
      if (!a.speaking && a.loudRun >= SPEECH_START_BLOCKS) {
        a.speaking = true;
        a.speechStart = a.runStart;
        if (a.audible) a.bargeWatch = { start: a.runStart, silentFrom: null };
      }
    } else {
      a.loudRun = 0;
      if (a.speaking && end - a.lastVoiced > SPEECH_END_S) {
        a.speaking = false;
        a.lastSpeechEnd = a.lastVoiced;
      }
    }
    // The bot's voice as played (after the stop gate) and as received.
    const playedDb = toDb(m.played);
    const receivedDb = toDb(m.received);
    if (receivedDb > PLAYED_DB) a.lastReceived = end;
    // A block that began before the gate shut was measured before it: not heard any more.
    const stale = a.gateClosed && m.t < a.closedAt;
    if (playedDb > PLAYED_DB && !stale) {
      if (a.lastPlayed < 0 || m.t - a.lastPlayed > AUDIBLE_HOLD_S) {
        a.onsetAt = m.t; // a new run of bot audio starts being heard
        a.onsetTurn = undefined;
      }
      a.lastPlayed = end;
      if (a.armed) takeOnset(a);
    }
    if (a.bargeWatch) watchBargeIn(a, m, end, playedDb > PLAYED_DB && !stale);
    a.audible = a.lastPlayed >= 0 && end - a.lastPlayed <= AUDIBLE_HOLD_S;
    a.botPeak = Math.max(a.botPeak, toPct(playedDb));
    // Stop / barge-in: record how soon it went quiet, and reopen the gate once the rest of
    // the stopped reply has drained (nothing received for 0.2 s, or after 3 s at most).
    if (a.gateClosed) {
      const rec = a.stopRecord;
      if (rec && rec.playedSilentMs === null && playedDb <= PLAYED_DB) {
        rec.playedSilentMs = Math.max(0, Math.round((m.t - a.closedAt) * 1000));
      }
      const drained = !a.awaitAck && end - Math.max(a.lastReceived, a.closedAt) > 0.2;
      if (drained || end - a.closedAt > 3) {
        if (rec && rec.receivedSilentMs === null) {
          rec.receivedSilentMs = Math.max(0, Math.round((a.lastReceived - a.closedAt) * 1000));
        }
        a.gateClosed = false;
        a.gate.gain.setValueAtTime(1, a.ctx.currentTime);
      }
    }
    if (end - a.meterAt > 0.05) { // meters at ~20 Hz
      a.meterAt = end;
      setMeter(ui.micLevel, ui.micMeter, micPct);
      setMeter(ui.botLevel, ui.botMeter, a.audible ? toPct(playedDb) : 0);
    }
    renderState();
  }

  // A barge-in as the caller hears it: from the start of their speech over the bot to the
  // start of 200 ms of silence in what is played (the server paused or stopped the voice, or
  // the page's gate shut, whichever came first).
  function watchBargeIn(a, m, end, heard) {
    const w = a.bargeWatch;
    if (heard) w.silentFrom = null;
    else if (w.silentFrom === null) w.silentFrom = m.t;
    if (w.silentFrom !== null && end - w.silentFrom >= 0.2) {
      callbot.bargeIns.push({
        heardStopMs: Math.max(0, Math.round((w.silentFrom - w.start) * 1000)) });
      a.bargeWatch = null;
    } else if (end - w.start > 5) {
      a.bargeWatch = null; // the bot talked on over the caller: not a barge-in
    }
  }

  // waitAck: a Stop the server has not confirmed yet; the gate stays shut until it does
  // (response.interrupted, or the bot no longer speaking) and the rest has drained.
  function closeGate(reason, waitAck = false) {
    const a = callbot.audio;
    if (!a) return;
    a.awaitAck = waitAck;
    a.gate.gain.cancelScheduledValues(0);
    a.gate.gain.setValueAtTime(0, a.ctx.currentTime);
    a.gate.gain.value = 0;
    if (!a.gateClosed) {
      a.stopRecord = { reason, playedSilentMs: null, receivedSilentMs: null,
        // a barge-in: from the start of the caller's speech (the page's own VAD) to silence
        fromSpeechMs: reason === "barge_in" && a.speaking
          ? Math.round((a.ctx.currentTime - a.speechStart) * 1000) : null };
      callbot.stops.push(a.stopRecord);
    }
    a.gateClosed = true;
    a.closedAt = a.ctx.currentTime;
    a.audible = false;
    a.lastPlayed = -1;
    a.armed = null;
    renderState();
  }

  // ---- the caller's latency ------------------------------------------------------------------

  function armOnset(turnId) {
    const a = callbot.audio;
    if (!a || !a.measuring) return;
    a.armed = { turnId };
    // The audio may already be playing (the event and the audio race on the network).
    if (a.audible && a.onsetTurn === undefined && a.onsetAt !== null) takeOnset(a);
  }

  function takeOnset(a) {
    const { turnId } = a.armed;
    a.armed = null;
    a.onsetTurn = turnId;
    const sentAt = conv.typedTurns.get(turnId);
    let from;
    let ref;
    if (sentAt !== undefined) {
      from = "text";
      ref = sentAt;
    } else if (a.lastSpeechEnd !== null && !a.speaking) {
      from = "speech";
      ref = a.lastSpeechEnd;
    } else {
      return; // the caller is still talking, or never spoke: no figure
    }
    const ms = Math.round((a.onsetAt - ref) * 1000);
    if (ms < 0 || ms > 30000) return;
    showLatency(turnId, ms, from);
  }

  function showLatency(turnId, ms, from) {
    callbot.latencies.push({ turnId, ms, from });
    const secs = (ms / 1000).toFixed(1);
    const after = from === "text" ? "you sent your message" : "you stopped talking";
    ui.latency.textContent = `Answer started ${secs} s after ${after}`;
    ui.latency.dataset.ms = String(ms);
    ui.latency.dataset.turnId = String(turnId);
    renderBreakdown(turnId);
    const bot = conv.byTurn.get(turnId);
    if (bot && !bot.li.querySelector(".metrics")) {
      const small = document.createElement("span");
      small.className = "metrics";
      small.textContent = `answered after ${secs} s`;
      bot.li.append(small);
    }
  }

  // ---- devices -------------------------------------------------------------------------------

  async function refreshDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    let devices;
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      return;
    }
    fillSelect(ui.micSelect, devices.filter((d) => d.kind === "audioinput"), "Microphone");
    const outputs = devices.filter((d) => d.kind === "audiooutput");
    const canChoose = typeof (window.AudioContext || Object).prototype.setSinkId === "function";
    fillSelect(ui.speakerSelect, outputs, "Speaker");
    ui.speakerSelect.hidden = ui.speakerLabel.hidden = !canChoose;
  }

  function fillSelect(select, devices, kind) {
    const chosen = select.value;
    select.textContent = "";
    const def = document.createElement("option");
    def.value = "";
    def.textContent = "System default";
    select.append(def);
    devices.forEach((d, i) => {
      if (!d.deviceId || d.deviceId === "default") return;
      const opt = document.createElement("option");
      opt.value = d.deviceId;
      opt.textContent = d.label || `${kind} ${i + 1}`;
      select.append(opt);
    });
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  function micConstraints() {
    const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (ui.micSelect.value) c.deviceId = { exact: ui.micSelect.value };
    return c;
  }

  async function switchMic() {
    if (!localStream || !audioSender) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: micConstraints() });
    } catch (err) {
      showError(mediaErrorMessage(err, false).text);
      return;
    }
    const track = stream.getAudioTracks()[0];
    track.enabled = !callbot.muted;
    await audioSender.replaceTrack(track);
    for (const old of localStream.getAudioTracks()) {
      old.stop();
      localStream.removeTrack(old);
    }
    localStream.addTrack(track);
    connectMic(callbot.audio, localStream);
  }

  function setMuted(muted) {
    callbot.muted = muted;
    ui.mute.setAttribute("aria-pressed", String(muted));
    ui.mute.textContent = muted ? "Unmute mic" : "Mute mic";
    if (localStream) for (const t of localStream.getAudioTracks()) t.enabled = !muted;
    if (muted && callbot.audio) {
      callbot.audio.speaking = false;
      callbot.audio.loudRun = 0;
    }
  }

  // ---- call set-up and tear-down ---------------------------------------------------------

  function waitForIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      // If gathering stalls, send what we have: host candidates come first.
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // {text, textOnly}: textOnly = the call can go on without a microphone.
  function mediaErrorMessage(err, withVideo) {
    const what = withVideo ? "camera" : "microphone";
    switch (err && err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return { text: `Microphone access was denied. Allow the ${what} for this page to talk; ` +
          "until then you can type.", textOnly: true };
      case "NotFoundError":
      case "OverconstrainedError":
        return { text: withVideo ? "No camera was found on this device."
          : "No microphone was found on this device: you can type instead.", textOnly: true };
      case "NotReadableError":
      case "AbortError":
        return { text: `The ${what} is in use by another application (or failed to start).` +
          (withVideo ? "" : " You can type instead."), textOnly: true };
      default:
        return { text: `Could not open the ${what}: ${err && err.message ? err.message : err}`,
          textOnly: true };
    }
  }

  async function openMedia(videoSource) {
    // The microphone first, on its own: an error then names the device that failed.
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: micConstraints() });
    } catch (err) {
      const why = mediaErrorMessage(err, false);
      showNotice(`${why.text} This call is text only: the bot's answers are spoken and written.`);
    }
    if (videoSource) {
      try {
        const video = videoSource === "screen"
          ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false })
          : await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
        stream = stream || new MediaStream();
        for (const t of video.getVideoTracks()) stream.addTrack(t);
      } catch (err) {
        showError(videoSource === "screen" ? "Screen sharing was cancelled or is not allowed; "
          + "the call goes on without video." : `${mediaErrorMessage(err, true).text} ` +
          "The call goes on without video.");
      }
    }
    return stream;
  }

  // The STUN/TURN servers the server hands out (short-lived TURN credentials when it has a
  // TURN shared secret) and its ICE policy ("relay": relayed candidates only). A server
  // that does not answer leaves the page on host candidates, as before.
  async function iceConfiguration() {
    try {
      const res = await fetch("v1/ice_servers", { cache: "no-store" });
      if (res.ok) {
        const data = await res.json();
        callbot.iceServers = data.ice_servers || [];
        return { iceServers: callbot.iceServers,
                 iceTransportPolicy: data.ice_transport_policy === "relay" ? "relay" : "all" };
      }
    } catch (err) {
      console.warn("callbot: no ICE servers from the server", err);
    }
    return { iceServers: [] };
  }

  async function postOffer(pc) {
    const options = {};
    if (ui.voice.value) options.voice = ui.voice.value;
    if (ui.language.value) options.language = ui.language.value;
    if (ui.prompt.value.trim()) options.system_prompt = ui.prompt.value.trim();
    const body = { sdp: pc.localDescription.sdp, type: "offer" };
    if (Object.keys(options).length) body.options = options;
    let res;
    try {
      res = await fetch("v1/calls", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`Could not reach the server (${err.message}).`);
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const msg = data && data.error && data.error.message
        ? data.error.message : `HTTP ${res.status} ${res.statusText}`;
      throw new Error(`The server refused the call: ${msg}`);
    }
    if (!data || data.type !== "answer" || !data.sdp) {
      throw new Error("The server sent an invalid answer.");
    }
    return data;
  }

  async function startCall() {
    clearError();
    showNotice(null);
    endingByUs = false;
    endReason = null;
    callbot.textOnly = false;
    callbot.serverState = "idle";
    // Turn ids start again in every call.
    metricsByTurn.clear();
    conv.byTurn.clear();
    conv.typedTurns.clear();
    conv.typed = [];
    ui.latency.textContent = "";
    delete ui.latency.dataset.ms;
    delete ui.latency.dataset.turnId;
    ui.latencyDetails.hidden = true;
    ui.callId.textContent = "–";
    ui.transcriptLink.hidden = true;
    setInCall(true);
    ui.hangup.focus(); // focus follows the control that is now live
    setConnection("connecting", "Opening microphone…");
    renderState();
    const videoSource = !ui.videoPanel.hidden && ui.camera.checked ? "camera" : "";
    // The audio graph is made inside the click, so the browser lets it play.
    const audioReady = startAudio();

    localStream = await openMedia(videoSource);
    callbot.audio = await audioReady;
    if (callbot.connection !== "connecting") return stopLocal(); // hung up meanwhile
    const hasMic = !!(localStream && localStream.getAudioTracks().length);
    callbot.textOnly = !hasMic;
    ui.mute.disabled = !hasMic;
    callbot.micPeak = 0;
    if (hasMic) {
      setMuted(callbot.muted);
      connectMic(callbot.audio, localStream);
      refreshDevices();
    }
    if (localStream && localStream.getVideoTracks().length) {
      ui.localVideo.srcObject = new MediaStream(localStream.getVideoTracks());
      ui.localVideo.hidden = false;
      ui.videoSlot.hidden = false;
    }

    const pc = new RTCPeerConnection(await iceConfiguration());
    callbot.pc = pc;
    // The events channel must exist before the offer so it is negotiated with it.
    const channel = pc.createDataChannel("events");
    callbot.channel = channel;
    channel.onmessage = onChannelMessage;
    channel.onopen = () => {
      setChatEnabled(true);
      if (callbot.textOnly) ui.textInput.focus();
    };
    channel.onclose = () => {
      setChatEnabled(false);
      if (callbot.pc === pc && !endingByUs) serverLost(pc, "channel");
    };

    audioSender = null;
    if (hasMic) {
      for (const track of localStream.getTracks()) {
        const sender = pc.addTrack(track, localStream);
        if (track.kind === "audio") audioSender = sender;
      }
    } else {
      // No microphone: receive the bot's voice only, and type.
      pc.addTransceiver("audio", { direction: "recvonly" });
      if (localStream) for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    }
    // video.js: screen sharing instead of the camera, when asked
    if (window.callbotVideo) {
      await window.callbotVideo.beforeOffer(pc, localStream || new MediaStream());
    }
    pc.ontrack = (e) => {
      runHooks("track", e);
      if (e.track.kind !== "audio") return window.callbotVideo?.onTrack(e); // the bot's video
      const stream = e.streams[0] || new MediaStream([e.track]);
      connectRemote(callbot.audio, stream);
    };
    pc.onconnectionstatechange = () => onConnectionState(pc);

    try {
      setConnection("connecting", "Connecting…");
      for (const fn of callbot.hooks.beforeOffer) await fn(pc, { videoSource });
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (callbot.pc !== pc) return;
      const answer = await postOffer(pc);
      if (callbot.pc !== pc) {
        hangupRequest(answer.call_id);
        return;
      }
      callbot.callId = answer.call_id;
      callbot.limits = {
        max_call_s: typeof answer.max_call_s === "number" ? answer.max_call_s : null,
        idle_timeout_s: typeof answer.idle_timeout_s === "number" ? answer.idle_timeout_s : null,
      };
      ui.callId.textContent = answer.call_id;
      // the call record: live during the call, afterwards if the server keeps transcripts
      ui.transcriptLink.href =
        `v1/calls/${encodeURIComponent(answer.call_id)}/transcript?format=vtt`;
      ui.transcriptLink.download = `call-${answer.call_id}.vtt`;
      ui.transcriptLink.hidden = false;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (err) {
      if (callbot.pc === pc) failCall(err.message || String(err));
    }
  }

  function onConnectionState(pc) {
    if (callbot.pc !== pc) return;
    const state = pc.connectionState;
    clearTimeout(disconnectTimer);
    if (state === "connected") {
      if (callbot.connection === "connecting") onConnected(pc);
      else setConnection("connected", "Connected");
    } else if (state === "disconnected") {
      setConnection("connecting", "Connection interrupted… reconnecting");
      disconnectTimer = setTimeout(() => {
        if (callbot.pc === pc && pc.connectionState !== "connected") serverLost(pc, "ice");
      }, DISCONNECT_GRACE_MS);
      serverLost(pc, "probe"); // ends the call at once if the server is gone
    } else if (state === "failed") {
      serverLost(pc, "ice");
    } else if (state === "closed" && !endingByUs) {
      serverLost(pc, "ice");
    }
  }

  function onConnected(pc) {
    setConnection("connected", "Connected");
    ui.hint.textContent = callbot.textOnly
      ? "Type to the bot below; its answers are spoken and written."
      : "Talk to the bot. Speak over it to interrupt.";
    if (callbot.serverState === "idle") callbot.serverState = "listening";
    renderState();
    announce("Call connected.");
    callStartedAt = performance.now();
    ui.duration.hidden = false;
    const limit = callbot.limits && callbot.limits.max_call_s;
    ui.timeLimit.textContent = limit ? `${clock(limit)} (the server ends calls after this)`
      : "none";
    tickDuration();
    durationTimer = setInterval(tickDuration, 1000);
    startMonitor(pc);
  }

  function clock(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function tickDuration() {
    const s = (performance.now() - callStartedAt) / 1000;
    const limit = callbot.limits && callbot.limits.max_call_s;
    ui.duration.textContent = limit ? `${clock(s)} / ${clock(limit)}` : clock(s);
    ui.duration.setAttribute("aria-label", `Call time ${clock(s)}` +
      (limit ? `, limit ${clock(limit)}` : ""));
    ui.detailDuration.textContent = clock(s);
  }

  // Is the server still there? The server always sends audio (silence when the bot is
  // quiet), so no packet for a while means the media path or the server is gone.
  function startMonitor(pc) {
    let lastPackets = -1;
    let lastChange = performance.now();
    clearInterval(monitorTimer);
    monitorTimer = setInterval(async () => {
      if (callbot.pc !== pc) return clearInterval(monitorTimer);
      let packets = 0;
      try {
        const stats = await pc.getStats();
        for (const s of stats.values()) {
          if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived || 0;
        }
      } catch {
        return;
      }
      const now = performance.now();
      if (packets !== lastPackets) {
        lastPackets = packets;
        lastChange = now;
      } else if (now - lastChange > MEDIA_SILENCE_MS) {
        lastChange = now; // probe at most once per silent stretch
        serverLost(pc, "media");
      }
    }, 500);
  }

  async function serverReachable() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), PROBE_TIMEOUT_MS);
    try {
      const res = await fetch("healthz", { cache: "no-store", signal: ctl.signal });
      return res.ok || res.status === 503;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  // Something looks wrong (channel closed, ICE trouble, no media): ask /healthz and say what
  // happened. `why` = "channel" | "ice" | "media" | "probe" (probe: end only if unreachable).
  async function serverLost(pc, why) {
    if (callbot.pc !== pc || endingByUs) return;
    const reachable = await serverReachable();
    if (callbot.pc !== pc || endingByUs) return;
    if (!reachable) {
      endCall("The server is not responding: it has stopped or cannot be reached. " +
        "The call has ended.", false);
    } else if (why === "channel") {
      endCall(endReason || "The server ended the call.", false);
    } else if (why === "ice") {
      endCall("The connection to the server was lost (the server is up, but the call's " +
        "network path failed).", false);
    } else if (why === "media") {
      endCall("The bot's audio stopped arriving, so the call was ended. Call again.", false);
    }
  }

  // Hang up as a hang-up: the server hears it before the peer connection closes.
  async function hangupRequest(id) {
    if (!id) return;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), HANGUP_TIMEOUT_MS);
    try {
      await fetch(`v1/calls/${encodeURIComponent(id)}`, {
        method: "DELETE", keepalive: true, signal: ctl.signal,
      });
    } catch {
      /* the server is gone or slow: the peer connection closing ends the call there */
    } finally {
      clearTimeout(timer);
    }
  }

  async function hangUp() {
    if (!callbot.pc && callbot.connection !== "connecting") return;
    const id = callbot.callId;
    endingByUs = true;
    closeGate("hangup");
    setConnection("ending", "Hanging up…");
    ui.hangup.disabled = true;
    if (localStream) for (const t of localStream.getTracks()) t.enabled = false;
    await hangupRequest(id);
    callbot.callId = null; // already hung up: teardown sends nothing more
    endCall("", true);
  }

  function stopLocal() {
    if (localStream) {
      for (const t of localStream.getTracks()) t.stop();
      localStream = null;
    }
    audioSender = null;
    ui.localVideo.srcObject = null;
    ui.localVideo.hidden = true;
    ui.videoSlot.hidden = ![...ui.videoSlot.children].some((c) => c !== ui.localVideo && !c.hidden);
    stopAudio();
  }

  function teardown() {
    clearTimeout(disconnectTimer);
    clearInterval(monitorTimer);
    clearInterval(durationTimer);
    const pc = callbot.pc;
    const id = callbot.callId;
    callbot.pc = null; // events from the old connection are ignored from now on
    callbot.callId = null;
    if (id) hangupRequest(id); // before the peer connection closes
    if (callbot.channel) {
      callbot.channel.onclose = null;
      callbot.channel = null;
    }
    if (pc) {
      pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        /* already closed */
      }
      callbot.lastPc = pc; // kept for tests that inspect the finished call
    }
    stopLocal();
    if (window.callbotVideo) window.callbotVideo.onEnd();
    ui.remoteAudio.srcObject = null;
    finishBot();
    conv.userPartial = null;
    conv.bot = null;
    setInCall(false);
    callbot.serverState = "idle";
    renderState();
    ui.duration.hidden = true;
    ui.hint.textContent = "Press Call and start talking.";
    ui.mute.disabled = false;
    ui.call.focus();
    runHooks("callEnded");
  }

  function endCall(message, byUser) {
    if (!callbot.pc && callbot.connection !== "connecting" && callbot.connection !== "ending") {
      return;
    }
    endingByUs = true;
    teardown();
    if (byUser) {
      setConnection("ended", "Call ended");
      addNote("Call ended.");
      announce("Call ended.");
    } else {
      setConnection("failed", "Disconnected");
      showError(message);
      addNote(message, "note bad");
    }
  }

  function failCall(message) {
    endingByUs = true;
    teardown();
    setConnection("failed", "Call failed");
    showError(message);
  }

  // ---- what the server offers ------------------------------------------------------------

  function applyHealth(h) {
    callbot.health = h;
    if (!h) return;
    if (Array.isArray(h.voices)) {
      for (const v of h.voices) {
        const opt = document.createElement("option");
        opt.value = v;
        opt.textContent = v;
        ui.voice.append(opt);
      }
    }
    if (Array.isArray(h.languages) && h.languages.length > 1) {
      const names = typeof Intl.DisplayNames === "function"
        ? new Intl.DisplayNames([navigator.language || "en"], { type: "language" }) : null;
      for (const entry of h.languages) {
        const code = typeof entry === "string" ? entry : entry && entry.code;
        if (typeof code !== "string") continue;
        const opt = document.createElement("option");
        opt.value = code;
        let name = code;
        try {
          name = (names && names.of(code)) || code;
        } catch {
          /* not a language tag Intl knows */
        }
        opt.textContent = name === code ? code : `${name} (${code})`;
        ui.language.append(opt);
      }
      ui.language.hidden = ui.languageLabel.hidden = false;
    }
    const video = !!(h.vision || h.bot_video);
    // Camera, screen sharing and the bot's tile (video.js) only where the server uses video.
    ui.videoPanel.hidden = !video;
    if (typeof h.llm === "string") {
      ui.detailModel.textContent = `${h.llm}${h.asr ? ` · speech recognition ${h.asr}` : ""}`;
      if (TINY_MODEL.test(h.llm)) {
        ui.modelNote.textContent = "";
        const strong = document.createElement("strong");
        strong.textContent = "Demo model: ";
        const code = document.createElement("code");
        code.textContent = "callbot serve --llm-base-url http://HOST:PORT/v1 --llm-model NAME";
        ui.modelNote.append(strong, `this server runs the tiny embedded model (${h.llm}), so ` +
          "answers will be short and often wrong. To use a better one, point it at any " +
          "OpenAI-compatible server: ", code, ".");
        ui.modelNote.hidden = false;
      }
    }
    runHooks("health", h);
  }

  // ---- wiring ----------------------------------------------------------------------------

  ui.call.addEventListener("click", () => {
    startCall().catch((err) => failCall(err.message || String(err)));
  });
  ui.hangup.addEventListener("click", () => {
    hangUp().catch((err) => console.error(err));
  });
  ui.mute.addEventListener("click", () => setMuted(!callbot.muted));
  ui.stopBot.addEventListener("click", () => {
    closeGate("cancelled", true); // silent at once; the server stops sending right after
    sendMessage({ type: "response.cancel" });
  });
  ui.volume.addEventListener("input", () => {
    const v = Number(ui.volume.value) / 100;
    ui.volume.setAttribute("aria-valuetext", `${ui.volume.value}%`);
    if (callbot.audio) callbot.audio.volume.gain.setTargetAtTime(v, callbot.audio.ctx.currentTime, 0.01);
    else ui.remoteAudio.volume = v;
  });
  ui.micSelect.addEventListener("change", () => {
    switchMic().catch((err) => showError(`Could not switch the microphone: ${err.message}`));
  });
  ui.speakerSelect.addEventListener("change", () => {
    outputDeviceId = ui.speakerSelect.value;
    const a = callbot.audio;
    if (a && typeof a.ctx.setSinkId === "function") {
      a.ctx.setSinkId(outputDeviceId).catch((err) =>
        showError(`Could not switch the speaker: ${err.message}`));
    }
  });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", () => refreshDevices());
  }
  ui.textForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.textInput.value.trim();
    if (!text) return;
    const at = callbot.audio ? callbot.audio.ctx.currentTime : 0;
    const extra = window.callbotVideo ? window.callbotVideo.messageExtras() : {}; // look flag
    if (sendMessage({ type: "input.text", text, ...extra })) {
      conv.typed.push({ text, at });
      ui.textInput.value = "";
    } else {
      showError("Not connected: start a call to send messages.");
    }
  });
  // Closing the tab mid-call: a beacon survives the page (DELETE cannot be a beacon).
  window.addEventListener("pagehide", () => {
    const id = callbot.callId;
    if (!id) return;
    callbot.callId = null;
    endingByUs = true;
    const url = `v1/calls/${encodeURIComponent(id)}/hangup`;
    const sent = navigator.sendBeacon && navigator.sendBeacon(url);
    if (!sent) fetch(url, { method: "POST", keepalive: true }).catch(() => {});
  });

  if (!window.RTCPeerConnection || !navigator.mediaDevices) {
    ui.call.disabled = true;
    showError("This browser cannot make WebRTC calls (or the page is not on a secure origin).");
  }
  refreshDevices();

  callbot.whenHealth = fetch("healthz")
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null)
    .then((h) => {
      applyHealth(h);
      return h;
    });

  setConnection("idle", "Not connected");
  renderState();
})();
