/** The part of noVNC's RFB class (@novnc/novnc, docs/API.md) the desktop page uses. */
declare module "@novnc/novnc" {
  export default class RFB extends EventTarget {
    constructor(
      target: HTMLElement,
      urlOrChannel: string | WebSocket,
      options?: { shared?: boolean; credentials?: Record<string, string>; wsProtocols?: string[] },
    );
    scaleViewport: boolean;
    resizeSession: boolean;
    clipViewport: boolean;
    focusOnClick: boolean;
    background: string;
    disconnect(): void;
    clipboardPasteFrom(text: string): void;
    focus(): void;
    sendCtrlAltDel(): void;
  }
}
