// callbot demo page: one WebRTC call to the server, its events shown as a conversation.
// Plain browser JavaScript, no build step. All URLs are relative so the page also works
// when the app is mounted under a prefix (the page URL always ends in "/").
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    call: $("call"),
    hangup: $("hangup"),
    stopBot: $("stop-bot"),
    camera: $("camera"),
    status: $("status"),
    botState: $("bot-state"),
    botStateLabel: $("bot-state-label"),
    hint: $("hint"),
    micLevel: $("mic-level"),
    meter: document.querySelector(".meter"),
    voice: $("voice"),
    prompt: $("system-prompt"),
    localVideo: $("local-video"),
    error: $("error"),
    log: $("log"),
    textForm: $("text-form"),
    textInput: $("text-input"),
    sendText: $("send-text"),
    remoteAudio: $("remote-audio"),
  };

  const GATHER_TIMEOUT_MS = 5000;
  const DISCONNECT_GRACE_MS = 4000;
  const BOT_LABELS = {
    idle: "Idle",
    connecting: "Connecting…",
    listening: "Listening",
    thinking: "Thinking…",
    speaking: "Speaking",
  };

  // Exposed for tests and for poking at from the console.
  const callbot = {
    pc: null,
    channel: null,
    callId: null,
    events: [], // every event received, in order (the whole call history of the page)
    state: "idle", // the bot's state: idle | connecting | listening | thinking | speaking
    connection: "idle", // idle | connecting | connected | ended | failed
    lastError: null,
    micPeak: 0, // highest mic level shown on the meter this call, 0..100
  };
  window.callbot = callbot;

  let localStream = null;
  let meter = null; // {ctx, raf}
  let disconnectTimer = null;
  let endingByUs = false;

  // ---- status and errors -----------------------------------------------------------------

  function setConnection(state, text) {
    callbot.connection = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function setBotState(state) {
    callbot.state = state;
    ui.botState.dataset.state = state;
    ui.botStateLabel.textContent = BOT_LABELS[state] || state;
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

  function setInCall(active) {
    ui.call.disabled = active;
    ui.hangup.disabled = !active;
    ui.camera.disabled = active;
    ui.voice.disabled = active;
    ui.prompt.disabled = active;
    setChatEnabled(false);
  }

  function setChatEnabled(enabled) {
    ui.textInput.disabled = !enabled;
    ui.sendText.disabled = !enabled;
    ui.stopBot.disabled = !enabled;
  }

  // ---- conversation log ------------------------------------------------------------------

  const conv = {
    userPartial: null, // <li> showing the live transcript of the current utterance
    bot: null, // {li, text, body, turnId} of the reply being streamed
    byTurn: new Map(), // turn_id -> bot reply entry (for metrics)
    typed: [], // texts we sent as input.text, to tag their transcript.final
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
    const typedAt = conv.typed.indexOf(ev.text);
    const typed = typedAt >= 0;
    if (typed) conv.typed.splice(typedAt, 1);
    let entry = conv.userPartial;
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
    scrollLog();
  }

  function botEntry() {
    if (!conv.bot) {
      const entry = addEntry("bot", "");
      conv.bot = { ...entry, text: "", turnId: conv.turnId };
      if (conv.turnId !== undefined) conv.byTurn.set(conv.turnId, conv.bot);
    }
    return conv.bot;
  }

  function onDelta(delta) {
    const bot = botEntry();
    bot.text += delta;
    bot.body.textContent = bot.text;
    scrollLog();
  }

  function onInterrupted(ev) {
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
    } else {
      addNote(`Bot interrupted (${reason})`, "note interrupted");
    }
    if (conv.bot === bot) conv.bot = null;
    scrollLog();
  }

  const METRIC_LABELS = [
    ["end_of_turn_ms", "end of turn"],
    ["asr_ms", "ASR"],
    ["llm_first_token_ms", "LLM 1st token"],
    ["tts_first_ms", "TTS 1st"],
    ["first_audio_ms", "first audio"],
  ];

  function onMetrics(ev) {
    const parts = METRIC_LABELS.filter(([key]) => typeof ev[key] === "number")
      .map(([key, label]) => `${label} ${Math.round(ev[key])} ms`);
    if (!parts.length) return;
    const bot = conv.byTurn.get(ev.turn_id);
    const small = document.createElement("span");
    small.className = "metrics";
    small.textContent = parts.join(" · ");
    if (bot) bot.li.append(small);
    else addEntry("metrics", parts.join(" · "));
    scrollLog();
  }

  // ---- events from the server ------------------------------------------------------------

  function onEvent(ev) {
    callbot.events.push(ev);
    switch (ev.type) {
      case "bot.state":
        setBotState(ev.state);
        break;
      case "vad.speech_started":
      case "vad.speech_stopped":
      case "response.audio.started":
      case "response.audio.done":
        break; // the page follows bot.state and the audio it plays instead
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
      case "error":
        showError(`Server error: ${ev.message} (${ev.code})`);
        break;
      case "idle.warning":
        showError(`No speech heard: the call ends in ${Math.round(ev.seconds_left)} s ` +
                  "unless you speak (is your microphone muted?)");
        break;
      default:
        break;
    }
  }

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

  // ---- microphone level meter ------------------------------------------------------------

  function startMeter(stream) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    const ctx = new Ctx();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    meter = { ctx, raf: 0 };
    callbot.micPeak = 0;
    const tick = () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      const rms = Math.sqrt(sum / buf.length);
      // -60 dBFS .. 0 dBFS onto 0..100 %
      const db = rms > 0 ? 20 * Math.log10(rms) : -100;
      const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
      callbot.micPeak = Math.max(callbot.micPeak, pct);
      ui.micLevel.style.width = `${pct.toFixed(0)}%`;
      ui.micLevel.toggleAttribute("data-loud", pct > 90);
      ui.meter.setAttribute("aria-valuenow", pct.toFixed(0));
      meter.raf = requestAnimationFrame(tick);
    };
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    tick();
  }

  function stopMeter() {
    if (!meter) return;
    cancelAnimationFrame(meter.raf);
    meter.ctx.close().catch(() => {});
    meter = null;
    ui.micLevel.style.width = "0%";
    ui.micLevel.removeAttribute("data-loud");
    ui.meter.setAttribute("aria-valuenow", "0");
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

  function micErrorMessage(err) {
    switch (err && err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Microphone access was denied. Allow the microphone for this page and press Call again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No microphone (or camera) was found on this device.";
      case "NotReadableError":
        return "The microphone is in use by another application.";
      default:
        return `Could not open the microphone: ${err && err.message ? err.message : err}`;
    }
  }

  async function postOffer(pc) {
    const options = {};
    if (ui.voice.value) options.voice = ui.voice.value;
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
    endingByUs = false;
    setInCall(true);
    setConnection("connecting", "Opening microphone…");
    setBotState("connecting");
    const wantVideo = ui.camera.checked;

    try {
      localStream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: wantVideo ? { width: 640, height: 480 } : false,
      });
    } catch (err) {
      return failCall(micErrorMessage(err));
    }
    if (callbot.connection !== "connecting") return stopLocal(); // hung up meanwhile
    startMeter(localStream);
    if (wantVideo) {
      ui.localVideo.srcObject = localStream;
      ui.localVideo.hidden = false;
    }

    const pc = new RTCPeerConnection({ iceServers: [] });
    callbot.pc = pc;
    // The events channel must exist before the offer so it is negotiated with it.
    const channel = pc.createDataChannel("events");
    callbot.channel = channel;
    channel.onmessage = onChannelMessage;
    channel.onopen = () => setChatEnabled(true);
    channel.onclose = () => {
      setChatEnabled(false);
      if (callbot.pc === pc && !endingByUs) endCall("The server ended the call.", false);
    };

    for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    // Receive the bot's voice even if the server adds its track only in the answer.
    pc.ontrack = (e) => {
      if (e.track.kind !== "audio") return;
      const stream = e.streams[0] || new MediaStream([e.track]);
      if (ui.remoteAudio.srcObject !== stream) ui.remoteAudio.srcObject = stream;
      ui.remoteAudio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => onConnectionState(pc);

    try {
      setConnection("connecting", "Connecting…");
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (callbot.pc !== pc) return;
      const answer = await postOffer(pc);
      if (callbot.pc !== pc) {
        deleteCall(answer.call_id);
        return;
      }
      callbot.callId = answer.call_id;
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
      setConnection("connected", "Connected");
      ui.hint.textContent = "Talk to the bot. Speak over it to interrupt.";
      if (callbot.state === "connecting") setBotState("listening");
    } else if (state === "disconnected") {
      setConnection("connecting", "Connection interrupted… reconnecting");
      disconnectTimer = setTimeout(() => {
        if (callbot.pc === pc && pc.connectionState !== "connected") {
          failCall("The connection to the server was lost.");
        }
      }, DISCONNECT_GRACE_MS);
    } else if (state === "failed") {
      failCall("The connection to the server failed (no network path for the media).");
    } else if (state === "closed" && !endingByUs) {
      endCall("The call was closed.", false);
    }
  }

  function deleteCall(id) {
    if (!id) return;
    fetch(`v1/calls/${encodeURIComponent(id)}`, { method: "DELETE", keepalive: true })
      .catch(() => {});
  }

  function stopLocal() {
    stopMeter();
    if (localStream) {
      for (const t of localStream.getTracks()) t.stop();
      localStream = null;
    }
    ui.localVideo.srcObject = null;
    ui.localVideo.hidden = true;
  }

  function teardown() {
    clearTimeout(disconnectTimer);
    const pc = callbot.pc;
    callbot.pc = null; // events from the old connection are ignored from now on
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
      // Keep a reference for tests that inspect the finished call.
      callbot.lastPc = pc;
    }
    deleteCall(callbot.callId);
    callbot.callId = null;
    stopLocal();
    ui.remoteAudio.srcObject = null;
    conv.userPartial = null;
    conv.bot = null;
    setInCall(false);
    setBotState("idle");
    ui.hint.textContent = "Press Call and start talking.";
  }

  function endCall(message, byUser) {
    if (!callbot.pc && callbot.connection !== "connecting") return;
    endingByUs = true;
    teardown();
    if (byUser) {
      setConnection("ended", "Call ended");
      addNote("Call ended.");
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

  // ---- wiring ----------------------------------------------------------------------------

  ui.call.addEventListener("click", () => {
    startCall().catch((err) => failCall(err.message || String(err)));
  });
  ui.hangup.addEventListener("click", () => endCall("", true));
  ui.stopBot.addEventListener("click", () => sendMessage({ type: "response.cancel" }));
  ui.textForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.textInput.value.trim();
    if (!text) return;
    if (sendMessage({ type: "input.text", text })) {
      conv.typed.push(text);
      ui.textInput.value = "";
    } else {
      showError("Not connected: start a call to send messages.");
    }
  });
  window.addEventListener("pagehide", () => deleteCall(callbot.callId));

  if (!window.RTCPeerConnection || !navigator.mediaDevices) {
    ui.call.disabled = true;
    showError("This browser cannot make WebRTC calls (or the page is not on a secure origin).");
  }

  // Offer the server's voices (optional: the call works without this).
  fetch("healthz")
    .then((r) => (r.ok ? r.json() : null))
    .then((h) => {
      if (!h || !Array.isArray(h.voices)) return;
      for (const v of h.voices) {
        const opt = document.createElement("option");
        opt.value = v;
        opt.textContent = v;
        ui.voice.append(opt);
      }
    })
    .catch(() => {});

  setConnection("idle", "Not connected");
  setBotState("idle");
})();
