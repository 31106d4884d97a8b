/** Parses a duration into milliseconds; `undefined` when it is not one. */
export declare function parseDuration(text: string): number | undefined;
