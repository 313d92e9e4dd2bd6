// callbot demo page, the video half: screen sharing, "ask about the picture", and the bot's
// own video tile (its state and live captions, drawn by the server). Loaded before app.js,
// which calls these hooks; without this file the page is a voice-only demo.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    panel: $("video-panel"),
    share: $("share-screen"),
    look: $("look"),
    botVideo: $("bot-video"),
    note: $("vision-note"),
  };
  let screenStream = null;

  function stopScreen() {
    if (screenStream) {
      for (const t of screenStream.getTracks()) t.stop();
      screenStream = null;
    }
  }

  const api = {
    frames: 0, // bot video frames painted (for tests), see watch()

    // Before the offer: share the screen (or a window) as the call's video when asked.
    async beforeOffer(pc, localStream) {
      if (!ui.share || !ui.share.checked) return;
      try {
        screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true });
      } catch {
        return; // the caller declined: the call goes on with the camera or audio only
      }
      const track = screenStream.getVideoTracks()[0];
      const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
      if (sender) await sender.replaceTrack(track); // the screen instead of the camera
      else pc.addTrack(track, localStream);
    },

    // The bot's video track (sent only when we offered video).
    onTrack(e) {
      if (e.track.kind !== "video" || !ui.botVideo) return;
      ui.botVideo.srcObject = new MediaStream([e.track]);
      ui.botVideo.hidden = false;
      ui.botVideo.play().catch(() => {});
      watch();
    },

    // Extra fields for a typed message: look at the picture when the box is ticked.
    messageExtras() {
      return ui.look && ui.look.checked ? { look: true } : {};
    },

    onVisionUsed(ev) {
      if (!ui.note) return;
      ui.note.hidden = false;
      ui.note.textContent = `Looked at your picture (${ev.engine}, ${Math.round(ev.ms)} ms).`;
    },

    onEnd() {
      stopScreen();
      if (ui.botVideo) {
        ui.botVideo.srcObject = null;
        ui.botVideo.hidden = true;
      }
      if (ui.note) ui.note.hidden = true;
    },

    // A small grey-level thumbnail of what the bot's tile shows now (tests compare them).
    snapshot(width = 64, height = 36) {
      const v = ui.botVideo;
      if (!v || !v.videoWidth) return null;
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(v, 0, 0, width, height);
      const rgba = ctx.getImageData(0, 0, width, height).data;
      const grey = [];
      for (let i = 0; i < rgba.length; i += 4) {
        grey.push(Math.round((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3));
      }
      return grey;
    },
  };

  function watch() {
    const v = ui.botVideo;
    if (!v || !v.requestVideoFrameCallback) return;
    const tick = () => {
      api.frames += 1;
      if (v.srcObject) v.requestVideoFrameCallback(tick);
    };
    v.requestVideoFrameCallback(tick);
  }

  window.callbotVideo = api;
})();
