import type { RamusEvent } from './events';

/**
 * Chat between an agent and its user, as the original named it. A runner speaks to the
 * user with `emit('chat', data)`: listeners see a `MessageToUserEvent`. The user's reply is
 * an event sent to a machine: `send({ type: MESSAGE_FROM_USER, data: { text } })`.
 */
export const MESSAGE_FROM_USER = 'chat';

export interface MessageToUserEventData {
  /** Lets a chat append to, or replace, a message it already shows. */
  id?: string;
  text: string;
  /** With `id`: replace the message's text instead of appending to it. */
  replace?: boolean;
}

/** What `on('event')` receives when a runner emits a message for the user. */
export type MessageToUserEvent = RamusEvent<'chat', MessageToUserEventData>;

export interface MessageFromUserEventData {
  text: string;
}

/** The data of a `MESSAGE_FROM_USER` event: the user's text, and the button they pressed, if any. */
export interface MessageFromUserEvent {
  text: string;
  buttonId?: string;
}
