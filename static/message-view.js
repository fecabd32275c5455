// How one message looks in a room's log (docs/protocol.md §3.2, §4): the chat page's lines.
//
//   li.msg[data-id][data-from]  .mine (yours), .mention (names you), .deleted ("message deleted", no .text)
//     .meta: .from, time, .edited "(edited)", .actions (button.react-add, button.edit, button.delete)
//     p.text
//     .reactions: button.reaction[data-emoji] "👍 2", title = who reacted, .mine when you did
//     .picker (opened by .react-add): button.pick[data-emoji]
//
// A button.delete on someone else's message has .moderation too: the stylesheet shows it only in
// a log marked .can-moderate (you own or moderate the room). The buttons do nothing by themselves:
// the chat page listens to clicks on the whole log and reads the line's data-id then.
// User data is only ever put in the page with textContent.

/** The emoji offered by a message's "React" button. */
export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮"];

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, label) {
  const node = element("button", className, text);
  node.type = "button";
  if (label) {
    node.title = label;
    node.setAttribute("aria-label", label);
  }
  return node;
}

function timeElement(ts, className) {
  const when = new Date(ts);
  const time = element("time", className, timeFormat.format(when));
  time.dateTime = when.toISOString();
  time.title = dateTimeFormat.format(when);
  return time;
}

/**
 * The line for ``message`` as ``me`` sees it; ``mentioned(text)`` says whether a text names ``me``.
 */
export function renderMessage(message, me, mentioned) {
  const from = String(message.from ?? "");
  const mine = from === me;
  const deleted = message.deleted === true;
  const text = String(message.text ?? "");
  const line = element("li", mine ? "msg mine" : "msg");
  if (!mine && !deleted && mentioned(text)) line.classList.add("mention");
  line.dataset.id = String(message.id);
  line.dataset.from = from;
  const head = element("div", "meta");
  head.append(element("span", "from", from));
  if (Number.isFinite(message.ts)) head.append(timeElement(message.ts));
  if (deleted) {
    line.classList.add("deleted");
    line.append(head, element("p", "deleted-note", "message deleted"));
    return line;
  }
  if (Number.isFinite(message.edited)) {
    const mark = element("span", "edited", "(edited)");
    mark.title = `edited ${dateTimeFormat.format(new Date(message.edited))}`;
    head.append(mark);
  }
  const actions = element("div", "actions");
  actions.append(button("react-add", "☺+", "React"));
  if (mine) actions.append(button("edit", "Edit", "Edit your message"));
  const remove = button(mine ? "delete" : "delete moderation", "Delete", "Delete this message");
  actions.append(remove);
  head.append(actions);
  line.append(head, element("p", "text", text));
  const reactions = renderReactions(message.reactions, me);
  if (reactions) line.append(reactions);
  return line;
}

function renderReactions(reactions, me) {
  if (!reactions || typeof reactions !== "object") return null;
  const box = element("div", "reactions");
  for (const [emoji, who] of Object.entries(reactions)) {
    if (!Array.isArray(who) || !who.length) continue;
    const names = who.map(String);
    const mine = names.some((name) => name.toLowerCase() === me.toLowerCase()); // account names have no case
    const chip = button(mine ? "reaction mine" : "reaction", `${emoji} ${names.length}`);
    chip.dataset.emoji = emoji;
    chip.title = names.join(", ");
    chip.setAttribute("aria-pressed", String(mine));
    chip.setAttribute("aria-label", `${emoji} ${names.length}: ${names.join(", ")}`);
    box.append(chip);
  }
  return box.children.length ? box : null;
}

/** Open (or close) the emoji picker under ``line``; returns the picker when it opened. */
export function togglePicker(line) {
  const open = line.querySelector(".picker");
  if (open) {
    open.remove();
    return null;
  }
  const picker = element("div", "picker");
  picker.setAttribute("role", "group");
  picker.setAttribute("aria-label", "Pick a reaction");
  for (const emoji of EMOJI) {
    const pick = button("pick", emoji, `React with ${emoji}`);
    pick.dataset.emoji = emoji;
    picker.append(pick);
  }
  line.append(picker);
  return picker;
}

/** Whether you reacted with ``emoji`` on ``line`` (its chip is .mine). */
export function reacted(line, emoji) {
  return [...line.querySelectorAll("button.reaction.mine")].some((chip) => chip.dataset.emoji === emoji);
}

/**
 * Turn the line's text into a box: Enter (without Shift) calls ``submit(text)``, Escape ``cancel()``.
 * ``draft`` is the text to start from (the current text by default).
 */
export function openEditor(line, submit, cancel, draft) {
  const shown = line.querySelector("p.text");
  if (!shown || line.querySelector(".edit-text")) return null;
  const box = element("textarea", "edit-text");
  box.rows = Math.min(6, Math.max(1, shown.textContent.split("\n").length));
  box.value = draft ?? shown.textContent;
  box.setAttribute("aria-label", "Edit your message: Enter saves, Escape cancels");
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit(box.value);
    } else if (event.key === "Escape") {
      event.preventDefault();
      cancel();
    }
  });
  shown.hidden = true;
  shown.after(box);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  return box;
}

/** Put the line's text back as it was shown. */
export function closeEditor(line) {
  line.querySelector(".edit-text")?.remove();
  const shown = line.querySelector("p.text");
  if (shown) shown.hidden = false;
}
