// What a service handler is: a function of a JSON request (and its context) to a
// JSON answer, or to a stream of answers.
export {};
