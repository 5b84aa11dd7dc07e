// The page to try mediarouter: join a room with camera and microphone through livekit-client and show everyone's
// video, with a green frame around whoever is speaking. ?room=R&identity=I&join=1 joins at once. In development
// mode the token comes from GET /dev/token; otherwise paste one made with `mediarouter token`.
"use strict";

const { Room, RoomEvent, Track } = LivekitClient;
const demo = { room: null, speakers: [], everSpoke: new Set(), error: null };
window.demo = demo;  // what is going on, for the curious (and the browser test)

const form = document.getElementById("join");
const statusLine = document.getElementById("status");
const tiles = document.getElementById("tiles");
const leaveButton = document.getElementById("leave-button");
const audioButton = document.getElementById("audio-button");

function say(text) { statusLine.textContent = text; }

function tileOf(participant) {
  const id = "tile-" + participant.identity;
  let tile = document.getElementById(id);
  if (!tile) {
    tile = document.createElement("div");
    tile.id = id;
    tile.className = "tile";
    tile.dataset.identity = participant.identity;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = participant.identity + (participant === demo.room.localParticipant ? " (you)" : "");
    tile.append(video, name);
    tiles.append(tile);
  }
  return tile;
}

function show(track, participant) {
  const tile = tileOf(participant);
  if (track.kind === Track.Kind.Video) {
    track.attach(tile.querySelector("video"));
  } else if (participant !== demo.room.localParticipant) {
    tile.append(track.attach());  // an <audio> element
  }
}

function markSpeakers(speakers) {
  demo.speakers = speakers.map((p) => p.identity);
  speakers.forEach((p) => demo.everSpoke.add(p.identity));
  for (const tile of tiles.children) tile.classList.toggle("speaking", demo.speakers.includes(tile.dataset.identity));
}

async function tokenFor(roomName, identity, given) {
  if (given) return given;
  const query = new URLSearchParams({ room: roomName, identity });
  const response = await fetch("/dev/token?" + query);
  if (!response.ok) throw new Error("no token: " + (await response.text()));
  return (await response.json()).token;
}

async function join(roomName, identity, given) {
  const room = new Room();
  demo.room = room;
  room
    .on(RoomEvent.TrackSubscribed, (track, pub, participant) => show(track, participant))
    .on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.tagName === "AUDIO" && el.remove()))
    .on(RoomEvent.LocalTrackPublished, (pub) => pub.track && show(pub.track, room.localParticipant))
    .on(RoomEvent.ParticipantConnected, (participant) => tileOf(participant))
    .on(RoomEvent.ParticipantDisconnected, (participant) => tileOf(participant).remove())
    .on(RoomEvent.ActiveSpeakersChanged, markSpeakers)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => { audioButton.hidden = room.canPlaybackAudio; })
    .on(RoomEvent.Disconnected, () => { say("left " + roomName); tiles.replaceChildren(); leaveButton.hidden = true; });
  say("joining " + roomName + " ...");
  const token = await tokenFor(roomName, identity, given);
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  await room.connect(url, token);
  tileOf(room.localParticipant);
  room.remoteParticipants.forEach((participant) => tileOf(participant));
  await room.localParticipant.enableCameraAndMicrophone();
  leaveButton.hidden = false;
  audioButton.hidden = room.canPlaybackAudio;
  say("in " + roomName + " as " + identity);
}

function start(roomName, identity, token) {
  join(roomName, identity, token).catch((error) => { demo.error = String(error); say(String(error)); });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  start(data.get("room").trim(), data.get("identity").trim(), data.get("token").trim());
});
leaveButton.addEventListener("click", () => demo.room && demo.room.disconnect());
audioButton.addEventListener("click", () => demo.room && demo.room.startAudio());

const params = new URLSearchParams(location.search);
for (const name of ["room", "identity", "token"]) if (params.get(name)) form.elements[name].value = params.get(name);
if (!form.elements.identity.value) form.elements.identity.value = "guest-" + Math.random().toString(36).slice(2, 6);
if (params.get("join") === "1") start(form.elements.room.value, form.elements.identity.value, form.elements.token.value);
