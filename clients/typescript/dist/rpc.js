// Promise and AsyncIterable adapters over grpc-js calls: deadlines from a
// `timeout`, cancellation from an AbortSignal, and errors as MicroError.
import { abortError, fromGrpcError } from "./errors.js";
function grpcOptions(options) {
    if (options.timeout === undefined || options.timeout <= 0)
        return {};
    return { deadline: new Date(Date.now() + options.timeout) };
}
/**
 * Runs one unary call.
 *
 * @param what names the call in error details, e.g. `greeter Greeter.Hello`
 */
export function unary(method, req, md, options, what) {
    const { signal } = options;
    return new Promise((resolve, reject) => {
        if (signal?.aborted) {
            reject(abortError(signal, what));
            return;
        }
        const onAbort = () => call.cancel();
        const call = method(req, md, grpcOptions(options), (err, res) => {
            signal?.removeEventListener("abort", onAbort);
            if (err === null)
                resolve(res);
            else if (signal?.aborted)
                reject(abortError(signal, what));
            else
                reject(fromGrpcError(err, what));
        });
        signal?.addEventListener("abort", onAbort, { once: true });
    });
}
/**
 * Starts a server-streaming call at once. Leaving the loop early (break, return,
 * throw) cancels the call, and so does the signal.
 */
export function startStream(method, req, md, options, what) {
    const { signal } = options;
    if (signal?.aborted) {
        const err = abortError(signal, what);
        const opened = Promise.reject(err);
        opened.catch(() => undefined);
        return { opened, messages: failed(err) };
    }
    const call = method(req, md, grpcOptions(options));
    // Our own listener: grpc-js emits 'error' after a cancel too, when the loop that
    // read the stream is gone, and an 'error' without listener would crash the process.
    let failure;
    call.on("error", (err) => (failure = err));
    const opened = new Promise((resolve, reject) => {
        call.once("metadata", () => resolve());
        call.once("error", (err) => reject(signal?.aborted ? abortError(signal, what) : fromGrpcError(err, what)));
        call.once("end", () => resolve());
    });
    opened.catch(() => undefined);
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    async function* messages() {
        try {
            for await (const message of call)
                yield message;
            // grpc-js ends the readable side before it reports a failed status.
            if (failure !== undefined)
                throw failure;
        }
        catch (err) {
            throw signal?.aborted ? abortError(signal, what) : fromGrpcError(err, what);
        }
        finally {
            signal?.removeEventListener("abort", onAbort);
            call.cancel();
        }
    }
    return { opened, messages: messages() };
}
/** A server stream as an AsyncIterable that starts when it is first read. */
export async function* serverStream(method, req, md, options, what) {
    yield* startStream(method, req, md, options, what).messages;
}
// eslint-disable-next-line require-yield
async function* failed(err) {
    throw err;
}
